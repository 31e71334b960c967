"""The loss family against the peers' own implementations: time and peak memory, CPU or CUDA.

    pytest bench/test_bench_family.py --benchmark-only      forward+backward of both sides at M rows
        (--bench-rows, else FASTCLR_BENCH_FAMILY_ROWS, else 1024,4096 on CPU and 4096,16384 on
        GPU), D = --bench-dims' first or 128, dtypes --bench-dtypes (fp32 on CPU; bf16, fp32 on
        GPU), --bench-impls: only these members (sup_con, dcl, dclw, clip); results in
        <--bench-results>/<device>/<--bench-prefix>family-<UTC time>.json, rewritten after every
        case (schema fastclr-bench-family/1; a case that fails its check is recorded as failed)
    pytest bench/test_bench_family.py                       (CI) each case once at M = 64: the
        value and gradient check against the peer, no timing, no memory probe, nothing saved

The device, timing, rounds and deadline are bench/conftest.py's harness (fastclr/bench/harness.py):
CUDA events around each call on GPU (L2 flushed before each), pytest-benchmark's clock on CPU.
Peak extra memory of one forward+backward: torch.cuda.max_memory_allocated on GPU
(memory.cuda_peak_bytes); on CPU the VmHWM growth of a fresh subprocess (the method of
tests/test_nt_xent_memory.py).

Pairs (same inputs; value and gradient checked before timing against the peer run in fp32 on the
same rounded inputs): fastclr.sup_con vs pytorch-metric-learning SupConLoss, fastclr.DCLLoss /
DCLWLoss vs lightly DCLLoss / DCLWLoss, fastclr.ClipLoss vs OpenCLIP ClipLoss. fastclr runs its
default backend ("auto": the Triton family kernels on CUDA, the chunked spec on CPU). The peers are
the optional `bench` extra; without one, its cases are recorded as unavailable and skip.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pytest
import torch

from fastclr.bench import impls, memory, results
from fastclr.bench.harness import SESSION
from fastclr.bench.settings import int_list
from fastclr.ops import backends

SCHEMA = "fastclr-bench-family/1"
REPO = Path(__file__).resolve().parents[1]
CI_ROWS = 64
SIDES = ("fastclr", "peer")

# member -> (peer module, fastclr's family member, setup, fastclr call, peer call). The setup
# draws from z, w [M, D] and g (a CPU generator) what both calls need, and names `leaves`: the
# tensors whose gradients are checked.
CASES = {
    "sup_con": (
        "pytorch_metric_learning",
        "sup_con",
        "labels = torch.randint(0, max(2, m // 8), (m,), generator=g).to(z.device); leaves = (z,)",
        "fastclr.sup_con(z, labels, 0.1)",
        "pytorch_metric_learning.losses.SupConLoss(0.1)(z, labels)",
    ),
    "dcl": (
        "lightly",
        "dcl",
        "z1, z2 = z[: m // 2], z[m // 2 :]; leaves = (z,)",
        "fastclr.DCLLoss(0.1)(z1, z2)",
        "lightly.loss.DCLLoss(0.1)(z1, z2)",
    ),
    "dclw": (
        "lightly",
        "dcl",
        "z1, z2 = z[: m // 2], z[m // 2 :]; leaves = (z,)",
        "fastclr.DCLWLoss(0.1, 0.5)(z1, z2)",
        "lightly.loss.DCLWLoss(0.1, sigma=0.5)(z1, z2)",
    ),
    "clip": (
        "open_clip",
        "clip_loss",
        "a, b = (F.normalize(x.detach(), dim=1).requires_grad_() for x in (z, w)); "
        "scale = torch.tensor(14.0, device=z.device); leaves = (a, b)",
        "fastclr.ClipLoss()(a, b, scale)",
        "open_clip.loss.ClipLoss()(a, b, scale)",
    ),
}

# The peak memory of one forward+backward in a fresh process (CPU): VmHWM growth over a warm-up.
PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    sys.path.insert(0, sys.argv[1])
    from bench.test_bench_family import FamilyCase, build
    torch.set_num_threads(2)
    case = FamilyCase(*json.loads(sys.argv[2]))

    def high_water_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    def run(case):
        _, loss = build(case, torch.device("cpu"), seed=0)
        loss().backward()

    run(FamilyCase(case.member, case.side, 16, case.dim, case.dtype))  # imports, warm-up
    before = high_water_bytes()
    run(case)
    print(json.dumps({"extra_bytes": high_water_bytes() - before}))
    """
)


@dataclass(frozen=True)
class FamilyCase:
    member: str
    side: str  # "fastclr" or "peer"
    rows: int  # M, the rows of z (DCL: z1, z2 of M/2 rows each)
    dim: int
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.member}-{self.side}-M{self.rows}-D{self.dim}-{self.dtype}"


def family_grid(config: pytest.Config) -> list[FamilyCase]:
    settings = config.stash[SESSION].settings
    gpu = settings.device.type == "cuda"
    if settings.full:
        env_rows = os.environ.get("FASTCLR_BENCH_FAMILY_ROWS")
        rows = config.getoption("bench_rows", None) or (
            int_list(env_rows) if env_rows else (4096, 16384) if gpu else (1024, 4096)
        )
        dims = config.getoption("bench_dims", None) or (128,)
        dtypes = config.getoption("bench_dtypes", None) or (
            ("bfloat16", "float32") if gpu else ("float32",)
        )
    else:
        rows, dims = (CI_ROWS,), (128,)
        dtypes = ("float32", "bfloat16") if gpu else ("float32",)
    chosen = [m for m in CASES if settings.impls is None or m in settings.impls]
    return [
        FamilyCase(member, side, m, dims[0], dtype)
        for dtype in dtypes
        for m in rows
        for member in chosen
        for side in SIDES
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "family_case" in metafunc.fixturenames:
        cases = family_grid(metafunc.config)
        metafunc.parametrize("family_case", cases, ids=[c.id for c in cases])


def peer_unavailable_reason(member: str) -> str | None:
    name = CASES[member][0]
    try:
        __import__({"pytorch_metric_learning": name + ".losses"}.get(name, name + ".loss"))
    except ImportError as err:
        return f"peer {name} does not import ({err}); pip install 'fastclr[bench]'"
    return None


def build(case: FamilyCase, device: torch.device, seed: int, dtype: str | None = None):
    """(leaves, loss function of them) for fastclr or the peer: inputs drawn from `seed` in fp32,
    rounded to case.dtype, then cast to `dtype` (default: case.dtype), so both sides and the fp32
    check see the same values."""
    import fastclr

    peer_module, _, setup, fastclr_call, peer_call = CASES[case.member]
    scope = {"torch": torch, "F": torch.nn.functional, "fastclr": fastclr}
    scope[peer_module] = __import__(peer_module)
    __import__({"pytorch_metric_learning": peer_module + ".losses"}.get(
        peer_module, peer_module + ".loss"))  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    want = impls.DTYPES[dtype or case.dtype]
    z, w = (
        torch.randn(case.rows, case.dim, generator=g)
        .to(impls.DTYPES[case.dtype])
        .to(device=device, dtype=want)
        .requires_grad_()
        for _ in range(2)
    )
    local = {"m": case.rows, "z": z, "w": w, "g": g}
    exec(setup, scope, local)
    call = fastclr_call if case.side == "fastclr" else peer_call
    return local["leaves"], lambda: eval(call, scope, local)


def value_and_grads(leaves, loss) -> tuple[torch.Tensor, torch.Tensor]:
    value = loss()
    grads = torch.autograd.grad(value, leaves)
    return value.detach().float(), torch.cat([g.float().flatten() for g in grads])


def check_against_peer(case: FamilyCase, device: torch.device, seed: int) -> dict:
    """Relative errors of fastclr's value and gradient against the peer's in fp32 on the same
    inputs; AssertionError beyond TOLERANCE[dtype] (fp32: 1e-4 on the value, 2e-3 on the grad)."""
    mine = value_and_grads(*build(replace(case, side="fastclr"), device, seed))
    theirs = value_and_grads(*build(replace(case, side="peer"), device, seed, dtype="float32"))
    dtype = impls.DTYPES[case.dtype]
    value_err = impls.relative_error(mine[0], theirs[0])
    grad_err = impls.relative_error(mine[1], theirs[1])
    value_tol = 1e-4 if dtype == torch.float32 else impls.TOLERANCE[dtype]
    tol = impls.TOLERANCE[dtype]
    assert value_err <= value_tol and grad_err <= tol, (
        f"{case.member} M={case.rows} {case.dtype}: fastclr {mine[0].item():.6g} vs peer "
        f"{theirs[0].item():.6g}; relative error of the value {value_err:.2e} (allowed "
        f"{value_tol:.0e}), of the gradient {grad_err:.2e} (allowed {tol:.0e}); not timed"
    )
    return {"value_rel_err": value_err, "grad_rel_err": grad_err, "tolerance": tol}


def cpu_peak_bytes(case: FamilyCase) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(REPO), json.dumps(list(asdict(case).values()))],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["extra_bytes"]


class FamilyResults:
    """The module's records, rewritten to its results file after every case in a timing run."""

    def __init__(self, bench) -> None:
        self.bench = bench
        self.records: list[dict] = []
        self.checks: dict[tuple, dict | str] = {}  # (member, rows, dim, dtype) -> errors | failure

    def add(self, case: FamilyCase, status: str, **fields) -> dict:
        record = {"suite": "family", **asdict(case), "status": status, **fields}
        self.records.append(record)
        settings = self.bench.settings
        if settings.full:
            env = self.bench.env
            path = results.results_path(
                settings.results_dir, env, prefix=settings.results_prefix + "family-"
            )
            results.write(path, SCHEMA, env, self.records, {"seed": self.bench.seed})
        return record


@pytest.fixture(scope="module")
def family(bench) -> FamilyResults:
    return FamilyResults(bench)


def test_family_vs_peer(benchmark, bench, family, family_case: FamilyCase) -> None:
    """One side of one pair: checked against the peer (once per pair and size), then timed."""
    case, device, settings = family_case, bench.device, bench.settings
    peer_module, member_name = CASES[case.member][:2]
    fields = {"peer": peer_module, "device": device.type}
    if case.side == "fastclr":
        fields["backend"] = backends.resolve_member(
            member_name, "auto", device, impls.DTYPES[case.dtype]
        )
    reason, status = peer_unavailable_reason(case.member), "unavailable"
    late = (
        settings.deadline_s is not None and time.monotonic() - bench.started > settings.deadline_s
    )
    if reason is None and late:
        reason, status = f"not started: the run passed its {settings.deadline_s:g} s", "deadline"
    if reason is not None:
        family.add(case, status, reason=reason, **fields)
        pytest.skip(f"{case.id}: {reason}")
    _ = bench.env  # the session's timestamp: taken at its first measurement
    key = (case.member, case.rows, case.dim, case.dtype)
    if key not in family.checks:  # the correctness gate: before either side is timed
        try:
            family.checks[key] = check_against_peer(case, device, bench.seed)
        except AssertionError as err:
            family.checks[key] = str(err)
    check = family.checks[key]
    if isinstance(check, str):
        family.add(case, "failed", error=check, **fields)
        pytest.fail(check)
    fields.update(check)
    benchmark.group = f"{case.member} forward+backward M={case.rows} D={case.dim} {case.dtype}"
    try:
        leaves, loss = build(case, device, bench.seed)

        def step() -> tuple[torch.Tensor, ...]:  # the harness's fwd+bwd: gradients in the peak
            return torch.autograd.grad(loss(), leaves)

        warm_s = bench.call_seconds(step)
        peak = method = None
        if settings.full:
            if device.type == "cuda":
                peak, method = memory.cuda_peak_bytes(step, device), "cuda max_memory_allocated"
            else:
                peak, method = cpu_peak_bytes(case), "VmHWM growth of a fresh subprocess"
        rounds = settings.min_rounds
        if settings.full:
            wanted = settings.target_s / max(warm_s, 1e-6)
            rounds = int(min(settings.max_rounds, max(rounds, wanted)))
        device_stats, wall, timer = bench.time_call(benchmark, step, rounds)
    except Exception as err:
        if not memory.is_out_of_memory(err):
            family.add(case, "failed", error=f"{type(err).__name__}: {err}"[:500], **fields)
            raise
        del err
        bench.release()
        family.add(case, "out of memory", reason="out of memory", **fields)
        pytest.skip(f"{case.id}: out of memory")
    record = family.add(
        case,
        "ok",
        time=device_stats,
        wall=wall,
        timer=timer,
        first_call_s=warm_s,
        peak_bytes=peak,
        memory_method=method,
        **fields,
    )
    benchmark.extra_info.update(record)
    bench.release()
