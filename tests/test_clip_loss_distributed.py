"""clip_loss(gather_distributed=True) on a real 2-rank gloo group equals one process on the global
batch (float64 oracle): values, feature gradients (W x for mean/sum, as DDP divides by W; exact for
"none" under a random upstream gradient) and the logit scale's gradient summed over ranks, on the
chunked spec in fp64 and on the Triton kernels in fp32 (interpreted on CPU). All cases run in one
spawn of 2 workers (~10 s); the seed is printed in every failure."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from fastclr.ops import clip_loss
from tests.loss_cases import clip_oracle
from tests.rank_checks import run_on_ranks

WORLD = 2
SEED = int.from_bytes(os.urandom(4), "little")
CASES = {
    f"{reduction}-n{n}-d{d}": (reduction, n, d)
    for reduction in ("mean", "sum", "none")
    for n, d in ((1, 3), (5, 7))
}
CASES.update({f"triton-{r}-n5-d7": (r, 5, 7, "triton") for r in ("mean", "none")})
# backend -> (input dtype, rtol, atol) against the float64 oracle
PRECISION = {"chunked": (torch.float64, 1e-9, 1e-10), "triton": (torch.float32, 1e-5, 2e-5)}


def check_case(seed: int, rank: int, reduction: str, n: int, d: int, backend="chunked") -> None:
    dtype, rtol, atol = PRECISION[backend]
    gen = torch.Generator().manual_seed(seed)
    a_all = torch.randn(WORLD * n, d, dtype=torch.float64, generator=gen)
    b_all = torch.randn(WORLD * n, d, dtype=torch.float64, generator=gen)
    upstream = torch.randn(2, WORLD * n, dtype=torch.float64, generator=gen)
    if backend == "triton":  # unit rows, as CLIP's encoders give: fp32 logits of size ~scale
        a_all, b_all = F.normalize(a_all, dim=1), F.normalize(b_all, dim=1)
    mine = slice(rank * n, (rank + 1) * n)

    a = a_all[mine].to(dtype).requires_grad_()
    b = b_all[mine].to(dtype).requires_grad_()
    scale = torch.tensor(7.5, dtype=dtype, requires_grad=True)
    out = clip_loss(a, b, scale, reduction=reduction, backend=backend, gather_distributed=True)
    weight = upstream[:, mine] if reduction == "none" else 1.0
    ga, gb, gs = torch.autograd.grad((out * weight).sum(), [a, b, scale])
    dist.all_reduce(gs)

    ra, rb = a_all.clone().requires_grad_(), b_all.clone().requires_grad_()
    rs = torch.tensor(7.5, dtype=torch.float64, requires_grad=True)
    rows = clip_oracle(ra, rb, rs)
    ref = {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]
    ref_weight = upstream if reduction == "none" else 1.0
    rga, rgb, rgs = torch.autograd.grad((ref * ref_weight).sum(), [ra, rb, rs])
    factor = 1.0 if reduction == "none" else float(WORLD)  # DDP's average removes it
    expected = ref[:, mine] if reduction == "none" else ref
    close = {"rtol": rtol, "atol": atol}
    torch.testing.assert_close(out.double(), expected, **close)
    torch.testing.assert_close(ga.double(), factor * rga[mine], **close)
    torch.testing.assert_close(gb.double(), factor * rgb[mine], **close)
    torch.testing.assert_close(gs.double(), factor * rgs, **close)


@pytest.fixture(scope="module")
def results() -> list[dict[str, str | None]]:
    checks = {name: (check_case, args) for name, args in CASES.items()}
    return run_on_ranks(checks, seed=SEED, world=WORLD)


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_one_process(results, case):
    for rank, outcome in enumerate(results):
        assert outcome[case] is None, f"rank {rank}, seed {SEED}:\n{outcome[case]}"


def test_without_process_group_equals_single_process():
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.equal(clip_loss(a, b, 3.0, gather_distributed=True), clip_loss(a, b, 3.0))
