"""The loss family against the peers' own implementations on CPU: time and peak memory.

    pytest bench/test_bench_family.py --benchmark-only      forward+backward timings at M rows
        (FASTCLR_BENCH_FAMILY_ROWS, default 1024,4096; D = 128, fp32), with the peak extra resident
        memory of one forward+backward, measured in a fresh subprocess (VmHWM growth, the method
        of tests/test_nt_xent_memory.py), in each result's extra_info and printed
    pytest bench/test_bench_family.py                       (CI) each case once at M = 64: the
        value check against the peer, no timing, no memory probe

Pairs (same inputs, same value: checked before timing): fastclr.sup_con vs pytorch-metric-learning
SupConLoss, fastclr.DCLLoss / DCLWLoss vs lightly DCLLoss / DCLWLoss, fastclr.ClipLoss vs OpenCLIP
ClipLoss. The peers are the optional `bench` extra; without one, its cases skip.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

ROWS = [int(r) for r in os.environ.get("FASTCLR_BENCH_FAMILY_ROWS", "1024,4096").split(",")]
DIM = 128
CI_ROWS = 64

# member -> (peer module, setup code shared by both sides, fastclr call, peer call). The setup
# draws z [M, D] (and w for CLIP), labels; both calls are expressions of those names.
CASES = {
    "sup_con": (
        "pytorch_metric_learning",
        "labels = torch.randint(0, max(2, m // 8), (m,))",
        "fastclr.sup_con(z, labels, 0.1)",
        "pytorch_metric_learning.losses.SupConLoss(0.1)(z, labels)",
    ),
    "dcl": (
        "lightly",
        "z1, z2 = z[: m // 2], z[m // 2 :]",
        "fastclr.DCLLoss(0.1)(z1, z2)",
        "lightly.loss.DCLLoss(0.1)(z1, z2)",
    ),
    "dclw": (
        "lightly",
        "z1, z2 = z[: m // 2], z[m // 2 :]",
        "fastclr.DCLWLoss(0.1, 0.5)(z1, z2)",
        "lightly.loss.DCLWLoss(0.1, sigma=0.5)(z1, z2)",
    ),
    "clip": (
        "open_clip",
        "a, b = (F.normalize(x.detach(), dim=1).requires_grad_() for x in (z, w)); "
        "scale = torch.tensor(14.0)",
        "fastclr.ClipLoss()(a, b, scale)",
        "open_clip.loss.ClipLoss()(a, b, scale)",
    ),
}

PREAMBLE = textwrap.dedent(
    """
    import importlib, json, sys, torch
    import torch.nn.functional as F
    import fastclr
    """
)

PEAK_SCRIPT = PREAMBLE + textwrap.dedent(
    """
    peer_module, setup, call, m, d = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    globals()[peer_module] = importlib.import_module(peer_module)
    if peer_module == "pytorch_metric_learning":
        importlib.import_module("pytorch_metric_learning.losses")
    if peer_module in ("lightly", "open_clip"):
        importlib.import_module(peer_module + ".loss")
    torch.set_num_threads(2)

    def high_water_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    def run(m):
        z = torch.randn(m, d, requires_grad=True)
        w = torch.randn(m, d, requires_grad=True)
        exec(setup, globals(), locals_ := {"m": m, "z": z, "w": w})
        eval(call, globals(), locals_).backward()

    run(16)  # imports and allocator warm-up
    before = high_water_bytes()
    run(m)
    print(json.dumps({"extra_bytes": high_water_bytes() - before}))
    """
)


def import_peer(name: str):
    module = pytest.importorskip(name)
    pytest.importorskip({"pytorch_metric_learning": name + ".losses"}.get(name, name + ".loss"))
    return module


def compile_case(member: str, side: str, m: int):
    """(inputs, loss function of them) for fastclr or the peer; the same seed for both sides."""
    import fastclr  # noqa: F401  (named in the expressions)

    peer_module, setup, fastclr_call, peer_call = CASES[member]
    scope = {"torch": torch, "F": torch.nn.functional, "fastclr": fastclr}
    scope[peer_module] = import_peer(peer_module)
    generator = torch.Generator().manual_seed(m)
    z = torch.randn(m, DIM, generator=generator, requires_grad=True)
    w = torch.randn(m, DIM, generator=generator, requires_grad=True)
    torch.manual_seed(m)
    local = {"m": m, "z": z, "w": w}
    exec(setup, scope, local)
    call = fastclr_call if side == "fastclr" else peer_call
    return (z, w), lambda: eval(call, scope, local)


def peak_extra_bytes(member: str, side: str, m: int) -> int:
    peer_module, setup, fastclr_call, peer_call = CASES[member]
    call = fastclr_call if side == "fastclr" else peer_call
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, peer_module, setup, call, str(m), str(DIM)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["extra_bytes"]


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("side", ["fastclr", "peer"])
@pytest.mark.parametrize("member", list(CASES))
def test_family_vs_peer(benchmark, member: str, side: str, rows: int) -> None:
    if benchmark.disabled and rows != ROWS[0]:
        pytest.skip("timing disabled: one tiny size per case")
    m = CI_ROWS if benchmark.disabled else rows
    # The correctness gate: both sides' values on the same inputs agree before anything is timed.
    _, mine = compile_case(member, "fastclr", m)
    _, theirs = compile_case(member, "peer", m)
    mine_value, peer_value = mine(), theirs()
    torch.testing.assert_close(mine_value, peer_value.to(mine_value.dtype), rtol=1e-4, atol=1e-4)

    inputs, loss = compile_case(member, side, m)
    benchmark.group = f"{member} forward+backward M={m} D={DIM} float32 cpu"
    benchmark.extra_info.update(
        {"member": member, "side": side, "rows": m, "dim": DIM, "torch": torch.__version__}
    )

    def step():
        for tensor in inputs:
            tensor.grad = None
        loss().backward()

    benchmark(step)
    if not benchmark.disabled:
        extra = peak_extra_bytes(member, side, m)
        benchmark.extra_info["peak_extra_mib"] = round(extra / 2**20, 1)
        print(f"\n{member} {side} M={m}: peak extra {extra / 2**20:.1f} MiB")
