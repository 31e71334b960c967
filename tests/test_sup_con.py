"""sup_con against the SupCon paper's L_out in float64, nt_xent, gradcheck, PML, and bad input."""

import pytest
import torch

import fastclr
from fastclr.errors import UsageError
from fastclr.ops import backends, family, nt_xent, sup_con
from tests.loss_cases import sup_con_oracle

# Row-block budgets: the default (one block), and ones that make blocks of 1 and of a size that
# does not divide the rows.
BUDGETS = [None, 1, 8 * 4 * 40 * 3]


@pytest.fixture(params=BUDGETS, ids=["one-block", "block-1", "block-3"])
def budget(request, monkeypatch):
    if request.param is not None:
        monkeypatch.setattr(family, "BLOCK_BUDGET_BYTES", request.param)


def random_labels(m: int, classes: int) -> torch.Tensor:
    labels = torch.randint(0, classes, (m,))
    labels[1] = labels[0]  # at least one positive pair
    return labels


@pytest.mark.parametrize("m,d,classes", [(3, 3, 2), (37, 5, 6), (40, 16, 40)])
@pytest.mark.parametrize("tau", [0.07, 0.3, 1.0])
def test_matches_the_paper_in_float64(m, d, classes, tau, budget):
    z = torch.randn(m, d, dtype=torch.float64, requires_grad=True)
    labels = random_labels(m, classes)
    tau_t = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(m, dtype=torch.float64)
    rows = sup_con(z, labels, tau_t, reduction="none")
    grads = torch.autograd.grad((rows * upstream).sum(), [z, tau_t])
    expected, _ = sup_con_oracle(z, labels, tau_t)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), [z, tau_t])
    torch.testing.assert_close(rows, expected, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_mean_counts_only_anchors_with_positives():
    z = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4, 4])  # anchors 5 and 6 have no positive
    rows = sup_con(z, labels, 0.2, reduction="none")
    assert rows[5] == 0 and rows[6] == 0
    expected, has_positive = sup_con_oracle(z, labels, 0.2)
    mean = sup_con(z, labels, 0.2)
    torch.testing.assert_close(mean, expected.sum() / has_positive.sum())
    (grad,) = torch.autograd.grad(mean, z)
    assert torch.isfinite(grad).all()


def test_views_of_two_equal_nt_xent():
    n, d = 11, 7
    z1, z2 = torch.randn(n, d), torch.randn(n, d)
    views = torch.stack([z1, z2], dim=1)  # [B, V, D]
    rows = sup_con(views, torch.arange(n), 0.5, reduction="none")  # [B, V]
    expected = nt_xent(z1, z2, 0.5, reduction="none", backend="chunked")
    torch.testing.assert_close(rows.T.flatten(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sup_con(views, torch.arange(n), 0.5), expected.mean())


def test_multi_view_is_sup_con_with_sample_labels():
    b, v, d = 6, 3, 5
    views = torch.randn(b, v, d, dtype=torch.float64)
    labels = torch.randint(0, 3, (b,))
    labels[1] = labels[0]
    flat = views.transpose(0, 1).flatten(0, 1)  # view-major rows
    expected, _ = sup_con_oracle(flat, labels.repeat(v), 0.1)
    got = sup_con(views, labels, 0.1, reduction="none")
    assert got.shape == (b, v)
    torch.testing.assert_close(got.T.flatten(), expected)


def test_gradcheck_float64():
    z = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 3])
    assert torch.autograd.gradcheck(lambda x, t: sup_con(x, labels, t, reduction="none"), (z, tau))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_accumulates_in_fp32(dtype):
    z = torch.randn(33, 16)
    labels = torch.randint(0, 5, (33,))
    labels[1] = labels[0]
    got = sup_con(z.to(dtype), labels, 0.1)
    assert got.dtype == torch.float32
    expected, has_positive = sup_con_oracle(z.to(dtype).double(), labels, 0.1)
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    assert abs(got.item() - (expected.sum() / has_positive.sum()).item()) < tolerance


def test_module_form_and_unlabelled_mode():
    views = torch.randn(5, 2, 8)
    loss = fastclr.SupConLoss(temperature=0.5)
    torch.testing.assert_close(loss(views), sup_con(views, torch.arange(5), 0.5))
    torch.testing.assert_close(
        loss(views), nt_xent(views[:, 0], views[:, 1], 0.5, backend="chunked")
    )


def test_matches_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    z = torch.randn(23, 6, dtype=torch.float64)
    labels = torch.randint(0, 4, (23,))
    labels[1] = labels[0]
    expected = pml.SupConLoss(temperature=0.2)(z, labels)
    torch.testing.assert_close(sup_con(z, labels, 0.2), expected)


@pytest.mark.parametrize(
    "labels,match",
    [
        (torch.tensor([0, 1, 0]), r"labels must have shape \[4\]"),
        (torch.tensor([0.0, 1.0, 0.0, 1.0]), "labels has dtype torch.float32"),
        (torch.tensor([True, False, True, False]), "labels has dtype torch.bool"),
        (torch.tensor([0, 1, 2, 3]), "no label occurs twice"),
        ([0, 1, 0, 1], "torch.as_tensor"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(UsageError, match=match):
        sup_con(torch.randn(4, 3), labels)


def test_bad_features_and_backend():
    with pytest.raises(UsageError, match=r"z must be \[M, D\] rows or \[B, V, D\]"):
        sup_con(torch.randn(4), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(UsageError, match="labels must have shape"):
        sup_con(torch.randn(2, 3, 4), torch.tensor([0, 0, 1]))  # [B] for [B, V, D]
    with pytest.raises(UsageError, match="no sup_con kernels.*backend='auto' or 'chunked'"):
        sup_con(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), backend="cuda")
    with pytest.raises(UsageError, match="temperature must be finite and > 0"):
        sup_con(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), 0.0)


def test_nothing_quadratic_is_saved_for_backward():
    m = 192
    saved: list[int] = []
    z = torch.randn(m, 16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        loss = sup_con(z, torch.randint(0, 10, (m,)))
    loss.backward()
    assert saved and max(saved) < m * m // 4, saved


def test_labels_on_another_device():
    with pytest.raises(UsageError, match="labels is on meta"):
        sup_con(torch.randn(4, 3), torch.zeros(4, dtype=torch.long, device="meta"))


def test_registry_says_which_backend_has_which_member():
    report = backends.member_report()
    assert report["chunked"] == dict.fromkeys(backends.MEMBERS)
    assert report["triton"] == dict.fromkeys(backends.MEMBERS)
    assert "no sup_con kernels" in report["cuda"]["sup_con"]
    assert report["cuda"]["nt_xent"] is None
    # "auto" falls back to the spec for a member the usable fused backends lack, and for any
    # member on CPU tensors.
    assert (
        backends.resolve_member("sup_con", "auto", torch.device("cpu"), torch.float32) == "chunked"
    )
    with pytest.raises(UsageError, match="backend='cuda' cannot compute sup_con"):
        backends.resolve_member("sup_con", "cuda", torch.device("cpu"), torch.float32)
