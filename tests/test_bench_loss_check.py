"""The benchmarks' correctness check (fastclr/bench/impls.py): fp16 gradients are checked the way
fp16 training produces them, under a loss scale, so a gradient that only underflows unscaled is not
called wrong, and one that is wrong still is."""

import torch

from fastclr.bench import impls
from fastclr.ops import nt_xent


def test_scaled_gradient_is_the_gradient_when_nothing_underflows() -> None:
    z1, z2 = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    loss = lambda a, b: nt_xent(a, b, 0.1, backend="reference")  # noqa: E731
    value, grad = impls.value_and_grad(loss, z1, z2)
    scaled_value, scaled_grad = impls.value_and_grad(loss, z1, z2, grad_scale=2.0**16)
    assert scaled_grad.dtype == torch.float64 and torch.equal(scaled_value, value)
    torch.testing.assert_close(scaled_grad, grad, rtol=1e-12, atol=0)


def test_fp16_gradient_below_fp16_range_is_recovered_by_the_scale() -> None:
    # A loss whose gradient, 1e-8 per element, is below fp16's smallest subnormal (6e-8).
    z1 = torch.randn(4, 3).half()
    z2 = torch.randn(4, 3).half()
    loss = lambda a, b: (a.float().sum() + b.float().sum()) * 1e-8  # noqa: E731
    _, unscaled = impls.value_and_grad(loss, z1, z2)
    _, scaled = impls.value_and_grad(loss, z1, z2, grad_scale=impls.GRAD_SCALE[torch.float16])
    want = torch.full((8, 3), 1e-8, dtype=torch.float64)
    assert impls.relative_error(unscaled, want) == 1.0  # flushed to zero
    assert impls.relative_error(scaled, want) < 1e-3
    wrong = lambda a, b: (a.float().sum() + b.float().sum()) * 2e-8  # noqa: E731
    _, wrong_grad = impls.value_and_grad(wrong, z1, z2, grad_scale=2.0**15)
    assert impls.relative_error(wrong_grad, want) > 0.5


def test_fp16_loss_value_takes_the_scale() -> None:
    # The plain loss in fp16 returns an fp16 value: its seed gradient must be an fp16 number.
    z1, z2 = torch.randn(6, 4).half(), torch.randn(6, 4).half()
    loss = lambda a, b: nt_xent(a, b, 0.1, backend="reference")  # noqa: E731
    value, grad = impls.value_and_grad(loss, z1, z2, grad_scale=impls.GRAD_SCALE[torch.float16])
    assert value.dtype == torch.float16 and torch.isfinite(grad).all()
    _, want = impls.value_and_grad(loss, z1.double(), z2.double())
    assert impls.relative_error(grad, want) < 1e-2
