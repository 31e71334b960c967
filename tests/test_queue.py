"""nt_xent(negatives=queue): extra negative-only columns (MoCo v2 queue, memory bank), float64."""

import pytest
import torch

import fastclr
from fastclr.errors import UsageError
from fastclr.ops import family, nt_xent
from tests.loss_cases import nt_xent_queue_oracle


@pytest.mark.parametrize("n,d,k", [(1, 3, 1), (3, 3, 5), (17, 8, 29)])
@pytest.mark.parametrize("tau", [0.07, 0.5])
@pytest.mark.parametrize("budget", [None, 1])
@pytest.mark.parametrize("decoupled", [False, True])
def test_matches_the_formula_in_float64(n, d, k, tau, budget, decoupled, monkeypatch):
    if budget is not None:
        monkeypatch.setattr(family, "BLOCK_BUDGET_BYTES", budget)
    z1 = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    queue = torch.randn(k, d, dtype=torch.float64)
    tau_t = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2 * n, dtype=torch.float64)
    rows = nt_xent(z1, z2, tau_t, reduction="none", negatives=queue, decoupled=decoupled)
    expected = nt_xent_queue_oracle(z1, z2, queue, tau_t, decoupled=decoupled)
    torch.testing.assert_close(rows, expected, rtol=1e-10, atol=1e-10)
    got = torch.autograd.grad((rows * upstream).sum(), [z1, z2, tau_t])
    want = torch.autograd.grad((expected * upstream).sum(), [z1, z2, tau_t])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def test_empty_queue_is_nt_xent_and_module_forwards_it():
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    queue = torch.randn(10, 4)
    torch.testing.assert_close(
        nt_xent(z1, z2, negatives=queue[:0]), nt_xent(z1, z2, backend="chunked")
    )
    torch.testing.assert_close(
        fastclr.NTXentLoss()(z1, z2, queue), nt_xent(z1, z2, negatives=queue)
    )


def test_gradcheck_float64():
    z1 = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    queue = torch.randn(4, 3, dtype=torch.float64)
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, t: nt_xent(a, b, t, reduction="none", negatives=queue), (z1, z2, tau)
    )


def test_bad_queue():
    z = torch.randn(3, 4)
    with pytest.raises(UsageError, match="negatives has D = 5 features but z1/z2 have 4"):
        nt_xent(z, z, negatives=torch.randn(8, 5))
    with pytest.raises(UsageError, match=r"negatives.to\(z1.dtype\)"):
        nt_xent(z, z, negatives=torch.randn(8, 4, dtype=torch.float64))
    with pytest.raises(UsageError, match=r"negatives.detach\(\)"):
        nt_xent(z, z, negatives=torch.randn(8, 4, requires_grad=True))
    with pytest.raises(UsageError, match=r"negatives must be \[K, D\]"):
        nt_xent(z, z, negatives=torch.randn(8))
    with pytest.raises(UsageError, match="no nt_xent_negatives kernels"):
        nt_xent(z, z, negatives=torch.randn(8, 4), backend="reference")


def test_nothing_quadratic_is_saved_for_backward():
    saved: list[int] = []
    z1, z2 = torch.randn(96, 16, requires_grad=True), torch.randn(96, 16)
    queue = torch.randn(512, 16)
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        loss = nt_xent(z1, z2, negatives=queue)
    loss.backward()
    assert saved and max(saved) < 192 * (192 + 512) // 4, saved


def test_queue_on_another_device():
    z = torch.randn(3, 4)
    with pytest.raises(UsageError, match=r"negatives is on meta.*negatives.to\(z1.device\)"):
        nt_xent(z, z, negatives=torch.empty(8, 4, device="meta"))
