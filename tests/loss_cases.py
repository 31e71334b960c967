"""Helpers shared by the loss tests: backends usable here and float64 reference comparisons."""

import torch

from fastclr.ops.backends import BACKENDS
from fastclr.ops.reference import nt_xent_reference


def usable_backends(device: torch.device, dtype: torch.dtype) -> list[str]:
    return [n for n, b in BACKENDS.items() if b.unavailable_reason(device, dtype) is None]


def reference_value_and_grads(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, upstream: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row losses and d(sum upstream * losses)/d(z1, z2) in float64."""
    a = z1.detach().double().requires_grad_()
    b = z2.detach().double().requires_grad_()
    rows = nt_xent_reference(a, b, temperature, reduction="none")
    ga, gb = torch.autograd.grad((rows * upstream.double()).sum(), [a, b])
    return rows.detach(), ga, gb


def reference_temperature_grads(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, upstream: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row losses and d(sum upstream * losses)/d(z1, z2, tau) in float64, tau a tensor leaf."""
    a = z1.detach().double().requires_grad_()
    b = z2.detach().double().requires_grad_()
    tau = torch.tensor(float(temperature), dtype=torch.float64, requires_grad=True)
    rows = nt_xent_reference(a, b, tau, reduction="none")
    ga, gb, gtau = torch.autograd.grad((rows * upstream.double()).sum(), [a, b, tau])
    return rows.detach(), ga, gb, gtau


def assert_at_most_twice_torchs_error(
    mine: torch.Tensor, torchs: torch.Tensor, exact: torch.Tensor, dtype: torch.dtype
) -> None:
    """flash-attention's rule for low precision: at most 2x as wrong as PyTorch in the same dtype.

    Plus one rounding of the result to `dtype`: gradients are returned in the inputs' dtype, and on
    tiny inputs PyTorch's own error can be zero by luck.
    """
    my_err = (mine.double() - exact).abs().max().item()
    torch_err = (torchs.double() - exact).abs().max().item()
    one_rounding = torch.finfo(dtype).eps * exact.abs().max().item()
    assert my_err <= 2 * torch_err + one_rounding + 1e-6, (my_err, torch_err, one_rounding)
