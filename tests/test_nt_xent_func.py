"""nt_xent under torch.func (grad, vmap, jacrev) and higher-order autograd.

Every backend supports first-order reverse mode in all its forms. The memory-efficient ones are
once-differentiable: a second derivative raises a UsageError that names the backend and points to
backend="reference", which PyTorch differentiates to any order; they have no forward mode.
"""

import pytest
import torch
from torch import nn

from fastclr.errors import UsageError
from fastclr.ops.nt_xent import nt_xent
from fastclr.ops.reference import nt_xent_reference
from tests.loss_cases import usable_backends

CPU = torch.device("cpu")
BACKENDS = usable_backends(CPU, torch.float32)
FUSED_BACKENDS = [b for b in BACKENDS if b != "reference"]
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_func_grad_equals_autograd(backend: str) -> None:
    z1, z2 = torch.randn(7, 5), torch.randn(7, 5)
    tau = torch.tensor(0.3)

    def loss(a, b, t):
        return nt_xent(a, b, t, backend=backend)

    g1, gtau = torch.func.grad(loss, argnums=(0, 2))(z1, z2, tau)
    a, t = z1.clone().requires_grad_(), nn.Parameter(tau.clone())
    e1, etau = torch.autograd.grad(nt_xent_reference(a, z2, t), [a, t])
    torch.testing.assert_close(g1, e1, **TOL)
    torch.testing.assert_close(gtau, etau, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_over_a_batch_of_losses_equals_a_loop(backend: str) -> None:
    z1, z2 = torch.randn(3, 6, 4), torch.randn(3, 6, 4)
    batched = torch.func.vmap(lambda a, b: nt_xent(a, b, 0.2, backend=backend))(z1, z2)
    looped = torch.stack([nt_xent(a, b, 0.2, backend=backend) for a, b in zip(z1, z2, strict=True)])
    torch.testing.assert_close(batched, looped, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jacrev_of_per_row_losses(backend: str) -> None:
    z1, z2 = torch.randn(5, 3), torch.randn(5, 3)

    def rows(fn):
        return lambda a: fn(a, z2, 0.4, reduction="none")

    ours = torch.func.jacrev(rows(lambda *a, **k: nt_xent(*a, **k, backend=backend)))(z1)
    exact = torch.func.jacrev(rows(nt_xent_reference))(z1.double())
    assert ours.shape == (10, 5, 3)
    torch.testing.assert_close(ours.double(), exact, **TOL)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_double_backward_is_refused_with_the_fix(backend: str) -> None:
    z1, z2 = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4)
    loss = nt_xent(z1, z2, backend=backend)
    (grad,) = torch.autograd.grad(loss, z1, create_graph=True)
    # A first-order gradient taken with create_graph=True is still right ...
    a = z1.detach().requires_grad_()
    (expected,) = torch.autograd.grad(nt_xent_reference(a, z2), a)
    torch.testing.assert_close(grad, expected, **TOL)
    # ... and differentiating it again names the backend and the fix.
    match = f"backend '{backend}' is once-differentiable; use backend='reference'"
    with pytest.raises(UsageError, match=match):
        grad.pow(2).sum().backward()


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_forward_mode_is_not_supported(backend: str) -> None:
    """torch.func.jvp/jacfwd/hessian: PyTorch says the Function has no jvp. (A jvp that raised
    fastclr's own message would make torch.compile refuse the Function.)"""
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(NotImplementedError, match="jvp"):
        torch.func.jvp(lambda a: nt_xent(a, z2, backend=backend), (z1,), (torch.ones_like(z1),))


def test_reference_backend_differentiates_twice() -> None:
    z1 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda a: nt_xent(a, z2, 0.5, backend="reference"), (z1,))
