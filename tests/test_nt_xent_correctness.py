"""Every usable backend against the float64 reference: values, reductions and gradients."""

import math

import pytest
import torch

import fastclr
from fastclr.ops import chunked
from fastclr.ops.function import nt_xent_rows
from fastclr.ops.nt_xent import nt_xent
from fastclr.ops.reference import nt_xent_reference
from tests.loss_cases import (
    assert_at_most_twice_torchs_error,
    reference_value_and_grads,
    usable_backends,
)

CPU = torch.device("cpu")
BACKENDS_FP32 = usable_backends(CPU, torch.float32)
TEMPERATURES = (0.05, 0.1, 0.5, 1.0)


@pytest.mark.parametrize("backend", BACKENDS_FP32)
@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 257])
@pytest.mark.parametrize("d", [1, 3, 128])
def test_matches_float64_reference(backend: str, n: int, d: int) -> None:
    temperature = TEMPERATURES[(n + d) % len(TEMPERATURES)]
    z1, z2 = torch.randn(n, d), torch.randn(n, d)
    upstream = torch.randn(2 * n)
    ref_rows, ref_g1, ref_g2 = reference_value_and_grads(z1, z2, temperature, upstream)

    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    rows = nt_xent(a, b, temperature, reduction="none", backend=backend)
    assert rows.shape == (2 * n,)
    g1, g2 = torch.autograd.grad((rows * upstream).sum(), [a, b])

    # fp32 rounding of a cosine is ~1e-7, scaled by 1/tau in the logits; the normalization's
    # backward divides by the row norm, so a short row amplifies the same rounding in its gradient.
    atol = 2e-5 / temperature
    shortest = torch.cat([z1, z2]).norm(dim=1).min().item()
    torch.testing.assert_close(rows.double(), ref_rows, atol=atol, rtol=1e-5)
    grad_tol = dict(atol=atol / min(shortest, 1.0), rtol=1e-5)
    torch.testing.assert_close(g1.double(), ref_g1, **grad_tol)
    torch.testing.assert_close(g2.double(), ref_g2, **grad_tol)
    for reduction, expected in (("mean", ref_rows.mean()), ("sum", ref_rows.sum())):
        value = nt_xent(z1, z2, temperature, reduction=reduction, backend=backend)
        assert value.dim() == 0
        torch.testing.assert_close(value.double(), expected, atol=2e-5 / temperature * n, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["chunked"])
def test_low_precision_error_at_most_twice_torchs_own(backend: str, dtype: torch.dtype) -> None:
    """flash-attention's rule: at most ~2x as wrong as PyTorch itself in the same dtype."""
    n, d, temperature = 37, 64, 0.2
    z1, z2 = torch.randn(n, d).to(dtype), torch.randn(n, d).to(dtype)
    upstream = torch.randn(2 * n)
    ref_rows, ref_g1, ref_g2 = reference_value_and_grads(z1, z2, temperature, upstream)

    def rows_and_grads(fn):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        rows = fn(a, b)
        ga, gb = torch.autograd.grad((rows * upstream.to(rows.dtype)).sum(), [a, b])
        return rows.double(), ga.double(), gb.double()

    ours = rows_and_grads(
        lambda a, b: nt_xent(a, b, temperature, reduction="none", backend=backend)
    )
    torchs = rows_and_grads(lambda a, b: nt_xent_reference(a, b, temperature, reduction="none"))
    for mine, theirs, exact in zip(ours, torchs, (ref_rows, ref_g1, ref_g2), strict=True):
        assert_at_most_twice_torchs_error(mine, theirs, exact, dtype)


def test_chunked_gradcheck_float64_across_blocks() -> None:
    """gradcheck the hand-written backward, with blocks that do not divide the rows."""

    class SmallBlocks:
        forward_rows = staticmethod(lambda *a: chunked.forward_rows(*a, block=3))
        backward_rows = staticmethod(lambda *a: chunked.backward_rows(*a, block=3))

    z1 = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_rows(a, b, 0.3, SmallBlocks), (z1, z2))


@pytest.mark.parametrize("backend", BACKENDS_FP32)
def test_tiny_case_by_hand(backend: str) -> None:
    """Views e1, e2 | e1, e2 at tau = 1: each row sees one positive (cos 1) and two negatives
    (cos 0), so every l = log(e + 2) - 1."""
    eye = torch.eye(2)
    loss = nt_xent(eye, eye.clone(), 1.0, backend=backend)
    assert loss.item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS_FP32)
def test_single_pair_has_zero_loss_and_gradient(backend: str) -> None:
    """N = 1: the positive is the only other row, so the softmax is certain."""
    z1 = torch.randn(1, 7, requires_grad=True)
    loss = nt_xent(z1, torch.randn(1, 7), 0.1, backend=backend)
    (grad,) = torch.autograd.grad(loss, [z1])
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert grad.abs().max().item() < 1e-5


@pytest.mark.parametrize("backend", BACKENDS_FP32)
def test_non_contiguous_sliced_and_expanded_inputs(backend: str) -> None:
    base = torch.randn(20, 9)
    sliced = base[::2, 1:]  # strided rows and an offset
    transposed = torch.randn(8, 10).T  # [10, 8] column-major
    expanded = torch.randn(1, 8).expand(10, 8)  # stride 0
    cases = ((sliced, torch.randn(10, 8)), (transposed, expanded))
    for z1, z2 in cases:
        expected = nt_xent_reference(z1.double(), z2.double(), 0.3)
        actual = nt_xent(z1, z2, 0.3, backend=backend)
        torch.testing.assert_close(actual.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS_FP32)
def test_zero_rows_give_finite_loss_and_gradient(backend: str) -> None:
    z1 = torch.randn(5, 4)
    z1[2] = 0.0
    z1.requires_grad_()
    z2 = torch.randn(5, 4)
    loss = nt_xent(z1, z2, 0.5, backend=backend)
    (grad,) = torch.autograd.grad(loss, [z1])
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(
        loss.double(),
        nt_xent_reference(z1.detach().double(), z2.double(), 0.5),
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.parametrize("backend", BACKENDS_FP32)
def test_nan_in_inputs_propagates_like_the_reference(backend: str) -> None:
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    z1[1, 0] = float("nan")
    assert torch.isnan(nt_xent_reference(z1, z2, 0.5))
    assert torch.isnan(nt_xent(z1, z2, 0.5, backend=backend))


def test_module_is_the_functional() -> None:
    z1, z2 = torch.randn(6, 16), torch.randn(6, 16)
    module = fastclr.NTXentLoss(temperature=0.2, reduction="sum", backend="chunked")
    assert torch.equal(module(z1, z2), nt_xent(z1, z2, 0.2, reduction="sum", backend="chunked"))


def test_auto_picks_chunked_on_cpu_and_matches_it() -> None:
    z1, z2 = torch.randn(9, 5), torch.randn(9, 5)
    assert torch.equal(nt_xent(z1, z2, backend="auto"), nt_xent(z1, z2, backend="chunked"))


def test_loss_dtype_is_fp32_for_half_inputs_and_fp64_for_double() -> None:
    half = torch.randn(4, 8, dtype=torch.bfloat16)
    assert nt_xent(half, half.flip(0), backend="chunked").dtype == torch.float32
    double = torch.randn(4, 8, dtype=torch.float64)
    assert nt_xent(double, double.flip(0), backend="chunked").dtype == torch.float64
