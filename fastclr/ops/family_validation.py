"""Input checks for the loss family's members: every error names the argument and the fix."""

import math
import numbers

import torch
from torch import Tensor

from fastclr.errors import UsageError
from fastclr.ops.validation import FLOAT_DTYPES, UsageTypeError


def check_features(
    name: str, z: Tensor, dims: tuple[int, ...], shape_text: str, allow_no_rows: bool = False
) -> None:
    """Raise unless z is a float tensor with one of `dims` dimensions and no empty axis (but the
    first when allow_no_rows: an empty queue)."""
    if not isinstance(z, Tensor):
        raise UsageTypeError(
            f"{name} must be a torch.Tensor of shape {shape_text}, got {type(z).__name__}"
        )
    if z.dtype not in FLOAT_DTYPES:
        raise UsageTypeError(
            f"{name} has dtype {z.dtype}; pass floating-point features "
            f"(float16, bfloat16, float32 or float64), e.g. {name}.float()"
        )
    if z.dim() not in dims:
        raise UsageError(f"{name} must be {shape_text}, got shape {tuple(z.shape)}")
    if z.shape[-1] == 0 or (z.numel() == 0 and not allow_no_rows):
        raise UsageError(
            f"{name} is empty (shape {tuple(z.shape)}): pass at least one row and column"
        )


def check_labels(
    labels: Tensor,
    num_rows: int,
    device: torch.device,
    what: str,
    views: int = 1,
    require_positive: bool = True,
) -> None:
    """Raise unless labels is an integer [num_rows] tensor on `device` and (require_positive) some
    anchor has a positive: views >= 2 of each sample, or a label that occurs twice (read on the
    host)."""
    if not isinstance(labels, Tensor):
        raise UsageTypeError(
            f"labels must be a torch.Tensor of {num_rows} integer class ids, got "
            f"{type(labels).__name__}: pass torch.as_tensor(labels)"
        )
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise UsageTypeError(
            f"labels has dtype {labels.dtype}; pass integer class ids, e.g. labels.long()"
        )
    if labels.dim() != 1 or labels.shape[0] != num_rows:
        raise UsageError(
            f"labels must have shape [{num_rows}] (one per {what}), got {tuple(labels.shape)}"
        )
    if labels.device != device:
        raise UsageError(f"labels is on {labels.device} but the features on {device}: move them")
    if (
        require_positive
        and views < 2
        and int(torch.unique(labels, return_counts=True)[1].max()) < 2
    ):
        raise UsageError(
            "no label occurs twice, so no anchor has a positive: give each class at least two "
            "rows (two views of an image, or two images of a class)"
        )


def check_negatives(negatives: Tensor, rows: Tensor) -> None:
    """Raise unless negatives is a [K, D] constant tensor matching rows' D, dtype and device."""
    check_features(
        "negatives", negatives, (2,), "[K, D] (a queue of K negatives)", allow_no_rows=True
    )
    if negatives.shape[1] != rows.shape[-1]:
        raise UsageError(
            f"negatives has D = {negatives.shape[1]} features but z1/z2 have {rows.shape[-1]}: "
            "fill the queue with projections of the same head"
        )
    if negatives.dtype != rows.dtype:
        raise UsageTypeError(
            f"negatives is {negatives.dtype} but z1/z2 are {rows.dtype}: pass "
            "negatives.to(z1.dtype)"
        )
    if negatives.device != rows.device:
        raise UsageError(
            f"negatives is on {negatives.device} but z1/z2 on {rows.device}: pass "
            "negatives.to(z1.device)"
        )
    if negatives.requires_grad:
        raise UsageError(
            "negatives requires grad, but a queue of negatives gets no gradient here: pass "
            "negatives.detach() (a MoCo queue or memory bank holds detached keys)"
        )


def check_logit_scale(logit_scale: float | Tensor) -> tuple[float, Tensor | None]:
    """CLIP's logit scale (already exponentiated): its value, and the 0-dim tensor to
    differentiate when it requires grad. Raises unless it is one finite real number > 0."""
    tensor = None
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise UsageError(
                f"logit_scale must be a scalar, got a tensor of shape {tuple(logit_scale.shape)}: "
                "pass the model's 0-dim logit_scale.exp()"
            )
        if logit_scale.dtype == torch.bool or logit_scale.is_complex():
            raise UsageTypeError(f"logit_scale must be a real number > 0, got {logit_scale.dtype}")
        if logit_scale.requires_grad:
            tensor = logit_scale.reshape(())
        logit_scale = logit_scale.item()
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, numbers.Real):
        raise UsageTypeError(
            f"logit_scale must be a number > 0 (CLIP starts at 1/0.07), got "
            f"{type(logit_scale).__name__}"
        )
    value = float(logit_scale)
    if not 0.0 < value < math.inf:
        raise UsageError(
            f"logit_scale must be finite and > 0, got {value}: pass the exponentiated scale, "
            "logit_scale.exp() (OpenCLIP clamps it to at most 100)"
        )
    return value, tensor


def check_dcl_sigma(sigma: float | None, decoupled: bool) -> None:
    if sigma is None:
        return
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 < sigma < math.inf:
        raise UsageError(f"dcl_weight_sigma must be a number > 0 (DCLW uses 0.5), got {sigma!r}")
    if not decoupled:
        raise UsageError(
            "dcl_weight_sigma weights the decoupled loss (DCLW): pass decoupled=True with it"
        )
