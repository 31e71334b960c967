#!/usr/bin/env bash
# The GPU acceptance run inside one short device lease (a machine lent for minutes, no network):
#
#   bash bench/gpu_lease.sh [SECONDS [BENCH-GPU-ARGS...]]
#       SECONDS (default 470): the run is stopped there, finished stages kept;
#       e.g. `bash bench/gpu_lease.sh 150 --stage budget --force` reruns one stage.
#
# Installs wheels carried in .whl/ (the peers of the family stage: lightly, OpenCLIP,
# pytorch-metric-learning; without them those cases are recorded as unavailable), installs this
# checkout over the machine's torch/triton, runs `fastclr bench gpu --lease --no-gate` under a
# hard time limit, then packs everything it wrote under bench/results/ into $OUT/results.tgz
# (unpack it in the checkout: `tar xzf results.tgz`). --no-gate because a lease is one try: the
# loss cases are checked against the oracle before they are timed anyway, and the stage records
# say when the GPU tests had failed.
set -u
budget_s=${1:-470}
shift $(($# > 0))
OUT=${OUT:-$(mktemp -d /tmp/fastclr-lease-XXXX)}
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
started="$OUT/.started"
touch "$started"
# Build the CUDA extension for this GPU only (the default list also builds sm_80: twice the time).
if command -v nvidia-smi >/dev/null; then
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1)
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$cap}
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
fi
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/fastclr-site .whl/*.whl >"$OUT/install.log" 2>&1 \
        && export PYTHONPATH=/tmp/fastclr-site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/install.log" 2>&1 \
    || { tail -20 "$OUT/install.log"; exit 1; }
timeout -s INT "$budget_s" python3 -m fastclr.cli.main bench gpu --lease --no-gate "$@" 2>&1 \
    | tee "$OUT/run.log"
echo "bench gpu exit: ${PIPESTATUS[0]} (124: stopped at ${budget_s} s, finished stages kept)"
mapfile -t written < <(find bench/results -type f -newer "$started")
tar czf "$OUT/results.tgz" "${written[@]}" && echo "packed ${#written[@]} files into $OUT/results.tgz"
