"""Input checks for the public loss: every error names the argument and says how to fix it."""

import math
import numbers

import torch
from torch import Tensor

from fastclr.errors import UsageError


class UsageTypeError(UsageError, TypeError):
    """A UsageError for an argument of the wrong type: `except TypeError` keeps catching it."""


REDUCTIONS = ("mean", "sum", "none")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_projections(z1: Tensor, z2: Tensor) -> None:
    """Raise UsageTypeError/UsageError unless z1, z2 are matching [N, D] float tensors, N >= 1."""
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, Tensor):
            raise UsageTypeError(
                f"{name} must be a torch.Tensor of shape [N, D], got {type(z).__name__}"
            )
        if z.dtype not in FLOAT_DTYPES:
            raise UsageTypeError(
                f"{name} has dtype {z.dtype}; NT-Xent needs floating-point projections "
                f"(float16, bfloat16, float32 or float64): pass {name}.float()"
            )
        if z.dim() != 2:
            raise UsageError(
                f"{name} must be 2-D [N, D] (batch, projection dim), got shape {tuple(z.shape)}; "
                f"flatten it with {name}.flatten(1)"
            )
    if z1.shape != z2.shape:
        raise UsageError(
            f"z1 and z2 must have the same shape [N, D] (row k of each is a positive pair), "
            f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] == 0:
        raise UsageError("z1 and z2 are empty (N = 0): NT-Xent needs at least one pair of views")
    if z1.shape[1] == 0:
        raise UsageError("z1 and z2 have D = 0 features: pass projections with at least one column")
    if z1.device != z2.device:
        raise UsageError(f"z1 is on {z1.device} but z2 is on {z2.device}: move both to one device")
    if z1.dtype != z2.dtype:
        raise UsageTypeError(
            f"z1 is {z1.dtype} but z2 is {z2.dtype}: cast both to one dtype (e.g. z2.to(z1.dtype))"
        )


def check_temperature(temperature: float | Tensor) -> tuple[float, Tensor | None]:
    """The temperature's value, and the tensor to differentiate when it requires grad.

    Accepts any real scalar (int, float, numpy scalar) and one-element real tensors; a tensor that
    does not require grad is used as a float. Raises UsageError unless it is finite and > 0.

    Returns:
        (tau as a float, the 0-dim tensor tau if it requires grad else None). Reading a CUDA
        tensor's value is a device-to-host copy: the kernels take tau by value.
    """
    tensor = None
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1:
            raise UsageError(
                f"temperature must be a scalar, got a tensor of shape {tuple(temperature.shape)}: "
                "pass a 0-dim tensor"
            )
        if temperature.dtype == torch.bool or temperature.is_complex():
            raise UsageTypeError(
                f"temperature must be a real number > 0 (SimCLR uses 0.1-0.5), got a "
                f"{temperature.dtype} tensor"
            )
        if temperature.requires_grad:
            tensor = temperature.reshape(())
        temperature = temperature.item()
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise UsageTypeError(
            f"temperature must be a number > 0 (SimCLR uses 0.1-0.5), got "
            f"{type(temperature).__name__}"
        )
    value = float(temperature)
    if not 0.0 < value < math.inf:  # also False for NaN
        # A learnable tau can be driven there by its optimizer: say how to keep it positive.
        learnable = (
            "; keep a learnable one positive, e.g. as log_tau.exp()" if tensor is not None else ""
        )
        raise UsageError(
            f"temperature must be finite and > 0 (SimCLR uses 0.1-0.5), got {value}{learnable}"
        )
    return value, tensor


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise UsageError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
