"""sup_con(gather_distributed=True), and nt_xent with a queue / decoupled across ranks, on a real 2-rank gloo group equals one process on the global
batch (float64 oracle of the SupCon paper): values, row gradients (W x for mean/sum, as DDP divides
by W; exact for "none" under a random upstream gradient), dL/dtau summed over ranks; labels whose
positives live only on the other rank; SupConLoss's multi-view mode with rank-unique sample ids.
On the chunked spec in fp64, and a few cases on the Triton kernels in fp32 (interpreted on CPU).
All cases run in one spawn of 2 workers (~10 s); the seed is printed in every failure."""

import os

import pytest
import torch
import torch.distributed as dist

import fastclr
from fastclr.errors import UsageError
from fastclr.ops import sup_con
from tests.loss_cases import nt_xent_queue_oracle, sup_con_oracle
from tests.rank_checks import run_on_ranks

WORLD = 2
SEED = int.from_bytes(os.urandom(4), "little")
CASES = {
    f"{reduction}-m{m}-d{d}-classes{classes}": (reduction, m, d, classes)
    for reduction in ("mean", "sum", "none")
    for m, d, classes in ((1, 3, 1), (7, 5, 4))  # m = 1: every positive is on the other rank
}
NT_XENT_CASES = {
    f"nt_xent-queue-{reduction}-decoupled{decoupled}": (reduction, decoupled)
    for reduction in ("mean", "sum", "none")
    for decoupled in (False, True)
}
CASES["triton-none-m7-d5-classes4"] = ("none", 7, 5, 4, "triton")
NT_XENT_CASES["triton-nt_xent-queue-mean-decoupledTrue"] = ("mean", True, "triton")
# backend -> (input dtype, rtol, atol) against the float64 oracle
PRECISION = {"chunked": (torch.float64, 1e-9, 1e-10), "triton": (torch.float32, 1e-5, 2e-5)}


def check_case(
    seed: int, rank: int, reduction: str, m: int, d: int, classes: int, backend="chunked"
) -> None:
    dtype, rtol, atol = PRECISION[backend]
    close = {"rtol": rtol, "atol": atol}
    gen = torch.Generator().manual_seed(seed)
    z_all = torch.randn(WORLD * m, d, dtype=torch.float64, generator=gen)
    labels_all = torch.randint(0, classes, (WORLD * m,), generator=gen)
    upstream = torch.randn(WORLD * m, dtype=torch.float64, generator=gen)
    mine = slice(rank * m, (rank + 1) * m)

    z = z_all[mine].to(dtype).requires_grad_()
    tau = torch.tensor(0.3, dtype=dtype, requires_grad=True)
    out = sup_con(
        z, labels_all[mine], tau, reduction=reduction, backend=backend, gather_distributed=True
    )
    weight = upstream[mine] if reduction == "none" else 1.0
    gz, gtau = torch.autograd.grad((out * weight).sum(), [z, tau])
    dist.all_reduce(gtau)

    rz = z_all.clone().requires_grad_()
    rtau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    rows, has_positive = sup_con_oracle(rz, labels_all, rtau)
    ref = {"mean": rows.sum() / has_positive.sum(), "sum": rows.sum(), "none": rows}[reduction]
    rgz, rgtau = torch.autograd.grad(
        (ref * (upstream if reduction == "none" else 1.0)).sum(), [rz, rtau]
    )
    factor = 1.0 if reduction == "none" else float(WORLD)
    torch.testing.assert_close(out.double(), ref[mine] if reduction == "none" else ref, **close)
    torch.testing.assert_close(gz.double(), factor * rgz[mine], **close)
    torch.testing.assert_close(gtau.double(), factor * rgtau, **close)


def check_nt_xent_queue_decoupled(
    seed: int, rank: int, reduction: str, decoupled: bool, backend="chunked"
) -> None:
    """nt_xent(negatives=Q, decoupled=...) across ranks: rows cat(z1_r, z2_r), the same queue on
    every rank, against the single-process formula on cat over ranks."""
    dtype, rtol, atol = PRECISION[backend]
    close = {"rtol": rtol, "atol": atol}
    gen = torch.Generator().manual_seed(seed + 1)
    n, d, k = 3, 5, 4
    z1_all = torch.randn(WORLD * n, d, dtype=torch.float64, generator=gen)
    z2_all = torch.randn(WORLD * n, d, dtype=torch.float64, generator=gen)
    queue = torch.randn(k, d, dtype=torch.float64, generator=gen)
    upstream = torch.randn(2 * WORLD * n, dtype=torch.float64, generator=gen)
    mine = slice(rank * n, (rank + 1) * n)
    local_rows = torch.cat(
        [torch.arange(WORLD * n)[mine], WORLD * n + torch.arange(WORLD * n)[mine]]
    )

    z1, z2 = z1_all[mine].to(dtype).requires_grad_(), z2_all[mine].to(dtype).requires_grad_()
    tau = torch.tensor(0.4, dtype=dtype, requires_grad=True)
    out = fastclr.nt_xent(
        z1,
        z2,
        tau,
        reduction=reduction,
        backend=backend,
        negatives=queue.to(dtype),
        decoupled=decoupled,
        gather_distributed=True,
    )
    weight = upstream[local_rows] if reduction == "none" else 1.0
    g1, g2, gtau = torch.autograd.grad((out * weight).sum(), [z1, z2, tau])
    dist.all_reduce(gtau)

    r1, r2 = z1_all.clone().requires_grad_(), z2_all.clone().requires_grad_()
    rtau = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    rows = nt_xent_queue_oracle(r1, r2, queue, rtau, decoupled=decoupled)
    ref = {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]
    ref_weight = upstream if reduction == "none" else 1.0
    rg1, rg2, rgtau = torch.autograd.grad((ref * ref_weight).sum(), [r1, r2, rtau])
    factor = 1.0 if reduction == "none" else float(WORLD)
    expected = ref[local_rows] if reduction == "none" else ref
    torch.testing.assert_close(out.double(), expected, **close)
    torch.testing.assert_close(g1.double(), factor * rg1[mine], **close)
    torch.testing.assert_close(g2.double(), factor * rg2[mine], **close)
    torch.testing.assert_close(gtau.double(), factor * rgtau, **close)


def check_multi_view_module(seed: int, rank: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    b, v, d = 3, 3, 4
    views_all = torch.randn(WORLD * b, v, d, dtype=torch.float64, generator=gen)
    loss = fastclr.SupConLoss(0.2, gather_distributed=True)(views_all[rank * b : (rank + 1) * b])
    flat = views_all.transpose(0, 1).flatten(0, 1)
    rows, _ = sup_con_oracle(flat, torch.arange(WORLD * b).repeat(v), 0.2)
    torch.testing.assert_close(loss, rows.mean(), rtol=1e-10, atol=1e-10)


def check_no_positive_anywhere(seed: int, rank: int) -> None:
    with pytest.raises(UsageError, match="across the ranks"):
        sup_con(torch.randn(2, 3), torch.tensor([2 * rank, 2 * rank + 1]), gather_distributed=True)


def rank_checks() -> dict:
    checks = {name: (check_case, args) for name, args in CASES.items()}
    checks["multi-view-module"] = (check_multi_view_module, ())
    for name, args in NT_XENT_CASES.items():
        checks[name] = (check_nt_xent_queue_decoupled, args)
    checks["no-positive-anywhere"] = (check_no_positive_anywhere, ())
    return checks


@pytest.fixture(scope="module")
def results() -> list[dict[str, str | None]]:
    return run_on_ranks(rank_checks(), seed=SEED, world=WORLD)


@pytest.mark.parametrize(
    "case", [*CASES, *NT_XENT_CASES, "multi-view-module", "no-positive-anywhere"]
)
def test_two_ranks_equal_one_process(results, case):
    for rank, outcome in enumerate(results):
        assert outcome[case] is None, f"rank {rank}, seed {SEED}:\n{outcome[case]}"


def test_without_process_group_equals_single_process():
    z, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.equal(sup_con(z, labels, gather_distributed=True), sup_con(z, labels))
