"""clip_loss against CLIP's / OpenCLIP's two-tower cross-entropies in float64, gradcheck with the
logit scale, OpenCLIP itself when installed, and bad input."""

import pytest
import torch
import torch.nn.functional as F

import fastclr
from fastclr.errors import UsageError
from fastclr.ops import clip_loss, family
from tests.loss_cases import clip_oracle


@pytest.mark.parametrize("n,d", [(1, 3), (3, 3), (29, 7)])
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
@pytest.mark.parametrize("budget", [None, 8 * 4 * 29 * 4])
def test_matches_the_formula_in_float64(n, d, scale, budget, monkeypatch):
    if budget is not None:
        monkeypatch.setattr(family, "BLOCK_BUDGET_BYTES", budget)
    a = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1).requires_grad_()
    b = torch.randn(n, d, dtype=torch.float64, requires_grad=True)  # unnormalized: used as given
    s = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, n, dtype=torch.float64)
    rows = clip_loss(a, b, s, reduction="none")
    expected = clip_oracle(a, b, s)
    torch.testing.assert_close(rows, expected, rtol=1e-10, atol=1e-10)
    got = torch.autograd.grad((rows * upstream).sum(), [a, b, s])
    want = torch.autograd.grad((expected * upstream).sum(), [a, b, s])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(clip_loss(a, b, s), expected.mean())
    torch.testing.assert_close(clip_loss(a, b, s, reduction="sum"), expected.sum())


def test_gradcheck_float64():
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y, t: clip_loss(x, y, t, reduction="none"), (a, b, s))


def test_learnable_log_scale_trains_through_the_module():
    log_scale = torch.nn.Parameter(torch.tensor(2.0))
    a, b = F.normalize(torch.randn(8, 4), dim=1), F.normalize(torch.randn(8, 4), dim=1)
    fastclr.ClipLoss()(a, b, log_scale.exp()).backward()
    expected = torch.autograd.grad(clip_oracle(a, b, log_scale.double().exp()).mean(), log_scale)
    torch.testing.assert_close(log_scale.grad, expected[0].float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_accumulates_in_fp32(dtype):
    a, b = F.normalize(torch.randn(33, 16), dim=1), F.normalize(torch.randn(33, 16), dim=1)
    got = clip_loss(a.to(dtype), b.to(dtype), 20.0)
    assert got.dtype == torch.float32
    expected = clip_oracle(a.to(dtype), b.to(dtype), 20.0).mean().item()
    assert abs(got.item() - expected) < (1e-5 if dtype == torch.float32 else 1e-2)


def test_matches_open_clip():
    loss = pytest.importorskip("open_clip.loss")
    a = F.normalize(torch.randn(12, 8, dtype=torch.float64), dim=1)
    b = F.normalize(torch.randn(12, 8, dtype=torch.float64), dim=1)
    scale = torch.tensor(14.0, dtype=torch.float64)
    torch.testing.assert_close(fastclr.ClipLoss()(a, b, scale), loss.ClipLoss()(a, b, scale))


def test_bad_input():
    a = torch.randn(4, 3)
    with pytest.raises(UsageError, match="logit_scale must be a scalar"):
        clip_loss(a, a, torch.ones(2))
    with pytest.raises(UsageError, match=r"finite and > 0.*logit_scale.exp\(\)"):
        clip_loss(a, a, torch.tensor(-1.0))
    with pytest.raises(UsageError, match="same shape"):
        clip_loss(a, torch.randn(5, 3), 1.0)
    with pytest.raises(UsageError, match="cast both to one dtype"):
        clip_loss(a, a.double(), 1.0)
    with pytest.raises(UsageError, match="no clip_loss kernels"):
        clip_loss(a, a, 1.0, backend="cuda")


def test_nothing_quadratic_is_saved_for_backward():
    saved: list[int] = []
    a, b = torch.randn(192, 16, requires_grad=True), torch.randn(192, 16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        loss = clip_loss(a, b, torch.tensor(10.0, requires_grad=True))
    loss.backward()
    assert saved and max(saved) < 192 * 192 // 4, saved
