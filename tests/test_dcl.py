"""nt_xent(decoupled=True) and DCLW weights against Yeh et al. 2022 in float64, and lightly."""

import pytest
import torch

import fastclr
from fastclr.errors import UsageError
from fastclr.ops import family, nt_xent
from tests.loss_cases import dclw_weights, nt_xent_queue_oracle


@pytest.mark.parametrize("n,d", [(2, 3), (13, 5)])
@pytest.mark.parametrize("tau", [0.1, 0.5])
@pytest.mark.parametrize("sigma", [None, 0.5])
@pytest.mark.parametrize("budget", [None, 8 * 4 * 26 * 3])
def test_matches_the_paper_in_float64(n, d, tau, sigma, budget, monkeypatch):
    if budget is not None:
        monkeypatch.setattr(family, "BLOCK_BUDGET_BYTES", budget)
    z1 = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    tau_t = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2 * n, dtype=torch.float64)
    rows = nt_xent(z1, z2, tau_t, reduction="none", decoupled=True, dcl_weight_sigma=sigma)
    weights = None if sigma is None else dclw_weights(z1, z2, sigma)
    expected = nt_xent_queue_oracle(z1, z2, None, tau_t, decoupled=True, weights=weights)
    torch.testing.assert_close(rows, expected, rtol=1e-10, atol=1e-10)
    got = torch.autograd.grad((rows * upstream).sum(), [z1, z2, tau_t])
    want = torch.autograd.grad((expected * upstream).sum(), [z1, z2, tau_t])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def test_gradcheck_float64():
    # Without DCLW weights: those are detached by definition (lightly, the authors' code), so a
    # finite difference through them would differ from the loss's gradient.
    z1 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, t: nt_xent(a, b, t, reduction="none", decoupled=True),
        (z1, z2, tau),
    )


@pytest.mark.parametrize("sigma", [None, 0.5])
def test_matches_lightly(sigma):
    loss = pytest.importorskip("lightly.loss")
    z1, z2 = torch.randn(9, 6, dtype=torch.float64), torch.randn(9, 6, dtype=torch.float64)
    peer = loss.DCLLoss(0.2) if sigma is None else loss.DCLWLoss(0.2, sigma=sigma)
    mine = fastclr.DCLLoss(0.2) if sigma is None else fastclr.DCLWLoss(0.2, sigma)
    torch.testing.assert_close(mine(z1, z2), peer(z1, z2))


def test_bad_input():
    z = torch.randn(3, 4)
    with pytest.raises(UsageError, match="pass decoupled=True with it"):
        nt_xent(z, z, dcl_weight_sigma=0.5)
    with pytest.raises(UsageError, match="dcl_weight_sigma must be a number > 0"):
        nt_xent(z, z, decoupled=True, dcl_weight_sigma=-1.0)
    with pytest.raises(UsageError, match="N = 1 pair leaves no negative"):
        nt_xent(z[:1], z[:1], decoupled=True)
    with pytest.raises(UsageError, match="N = 1 pair leaves no negative"):
        nt_xent(z[:1], z[:1], decoupled=True, negatives=torch.randn(0, 4))
    with pytest.raises(UsageError, match="no dcl kernels"):
        nt_xent(z, z, decoupled=True, backend="cuda")
