"""Input checks for the public loss: every error names the argument and says how to fix it."""

import math

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_projections(z1: Tensor, z2: Tensor) -> None:
    """Raise TypeError/ValueError unless z1, z2 are matching [N, D] float tensors, N >= 1."""
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape [N, D], got {type(z).__name__}"
            )
        if z.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} has dtype {z.dtype}; NT-Xent needs floating-point projections "
                f"(float16, bfloat16, float32 or float64): pass {name}.float()"
            )
        if z.dim() != 2:
            raise ValueError(
                f"{name} must be 2-D [N, D] (batch, projection dim), got shape {tuple(z.shape)}; "
                f"flatten it with {name}.flatten(1)"
            )
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape [N, D] (row k of each is a positive pair), "
            f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] == 0:
        raise ValueError("z1 and z2 are empty (N = 0): NT-Xent needs at least one pair of views")
    if z1.shape[1] == 0:
        raise ValueError("z1 and z2 have D = 0 features: pass projections with at least one column")
    if z1.device != z2.device:
        raise ValueError(f"z1 is on {z1.device} but z2 is on {z2.device}: move both to one device")
    if z1.dtype != z2.dtype:
        raise TypeError(
            f"z1 is {z1.dtype} but z2 is {z2.dtype}: cast both to one dtype (e.g. z2.to(z1.dtype))"
        )


def check_temperature(temperature: float) -> float:
    """Return temperature as a float; raise unless it is a finite number > 0."""
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1:
            raise ValueError(
                f"temperature must be a scalar, got a tensor of shape {tuple(temperature.shape)}"
            )
        temperature = temperature.item()
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(
            f"temperature must be a number > 0 (SimCLR uses 0.1-0.5), got "
            f"{type(temperature).__name__}"
        )
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"temperature must be finite and > 0 (SimCLR uses 0.1-0.5), got {temperature}"
        )
    return float(temperature)


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
