"""swapped_prediction_loss against a float64 transcription of SwAV's loss loop (main_swav.py),
its gradients (gradcheck in fp64), dtypes, and bad input. Fresh random inputs; the seed is
printed in every failure."""

import os

import pytest
import torch

from fastclr.errors import UsageError
from fastclr.ops import sinkhorn_knopp, swapped_prediction_loss

SEED = int.from_bytes(os.urandom(4), "little")


def swav_loss(scores, codes_by_view, temperature):
    """facebookresearch/swav main_swav.py train(): the loss over crops_for_assign, as written."""
    softmax = torch.nn.Softmax(dim=1)
    loss = 0
    for crop_id, q in codes_by_view.items():
        subloss = 0
        for v in range(len(scores)):
            if v == crop_id:
                continue
            p = softmax(scores[v] / temperature)
            subloss -= torch.mean(torch.sum(q * torch.log(p), dim=1))
        loss += subloss / (len(scores) - 1)
    return loss / len(codes_by_view)


def _case(views, b, k, dtype=torch.float64, seed=SEED):
    gen = torch.Generator().manual_seed(seed)
    scores = [torch.randn(b, k, generator=gen, dtype=torch.float64) for _ in range(views)]
    codes = [torch.softmax(torch.randn(b, k, generator=gen, dtype=dtype) / 0.3, 1) for _ in "ab"]
    return [s.to(dtype).requires_grad_() for s in scores], codes


@pytest.mark.parametrize(("views", "b", "k"), [(2, 1, 2), (3, 5, 7), (8, 9, 30), (4, 16, 3)])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("form", ["list", "dict", "one-local"])
def test_matches_swav_in_float64(views, b, k, temperature, form):
    scores, codes = _case(views, b, k)
    coded = dict(enumerate(codes))
    if form == "one-local":  # codes of the last view only: the dict names any view
        coded = {views - 1: codes[0]}
    given = codes if form == "list" else coded
    got = swapped_prediction_loss(scores, given, temperature)
    reference = [s.detach().clone().requires_grad_() for s in scores]
    expected = swav_loss(reference, coded, temperature)
    assert got.dtype == torch.float64 and got.dim() == 0
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=f"seed {SEED}")
    upstream = torch.randn((), dtype=torch.float64)
    # a coded view predicts nothing when it is the only other view: no gradient, for both
    grads = torch.autograd.grad(got * upstream, scores, materialize_grads=True)
    expected_grads = torch.autograd.grad(expected * upstream, reference, materialize_grads=True)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12, msg=f"seed {SEED}")


def test_gradcheck_float64():
    scores, codes = _case(3, 4, 5)
    assert torch.autograd.gradcheck(
        lambda *s: swapped_prediction_loss(list(s), codes, 0.3), tuple(scores)
    )


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.float16, 1e-5), (torch.bfloat16, 1e-5)]
)
def test_lower_precision_scores_give_a_float32_loss(dtype, tolerance):
    """fp16/bf16 scores are upcast before the softmax: the loss is the fp64 loss of the rounded
    scores to fp32 accuracy."""
    scores, codes = _case(4, 12, 10, dtype)
    got = swapped_prediction_loss(scores, codes)
    assert got.dtype == torch.float32
    rounded = [s.detach().double() for s in scores]
    expected = swav_loss(rounded, {0: codes[0].double(), 1: codes[1].double()}, 0.1)
    torch.testing.assert_close(got.double(), expected, rtol=tolerance, atol=tolerance)
    got.backward()
    assert all(s.grad is not None and s.grad.dtype == dtype for s in scores)


def test_codes_from_scores_that_require_grad_are_targets():
    """The usual call: codes from the same scores (sinkhorn_knopp runs under no_grad), so only the
    predictions carry gradient; the gradient is that of SwAV with the codes as constants."""
    scores, _ = _case(3, 6, 4)
    codes = [sinkhorn_knopp(s) for s in scores[:2]]
    assert not any(q.requires_grad for q in codes)
    loss = swapped_prediction_loss(scores, codes)
    grads = torch.autograd.grad(loss, scores)
    reference = [s.detach().clone().requires_grad_() for s in scores]
    expected = torch.autograd.grad(swav_loss(reference, dict(enumerate(codes)), 0.1), reference)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def _bad_cases():
    s = [torch.randn(4, 3) for _ in range(3)]
    q = [torch.softmax(torch.randn(4, 3), dim=1) for _ in range(2)]
    return [
        ([s[0]], q, {}, "list of >= 2"),
        (torch.stack(s), q, {}, "list of >= 2"),
        ([s[0], torch.randn(5, 3)], q, {}, r"scores\[1\]"),
        ([torch.randn(0, 3), torch.randn(0, 3)], q, {}, "B >= 1"),
        ([s[0], torch.randn(4)], q, {}, r"scores\[1\] must be a \[B, K\]"),
        ([s[0], s[1].long()], q, {}, "dtype"),
        (s, q[0], {}, "codes must be a list"),
        (s, [], {}, "codes is empty"),
        (s, {3: q[0]}, {}, "views \\[3\\]"),
        (s, {True: q[0]}, {}, "views \\[True\\]"),
        (s, [torch.randn(4, 5)], {}, "codes of view 0"),
        (s, [q[0].clone().requires_grad_()], {}, "require grad"),
        (s, q, {"temperature": 0.0}, "temperature"),
        (s, q, {"temperature": float("nan")}, "temperature"),
    ]


@pytest.mark.parametrize(("scores", "codes", "kwargs", "match"), _bad_cases())
def test_bad_input_is_named(scores, codes, kwargs, match):
    with pytest.raises(UsageError, match=match) as error:
        swapped_prediction_loss(scores, codes, **kwargs)
    assert "\n" not in str(error.value)
