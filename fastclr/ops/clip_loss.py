"""fastclr.ops.clip_loss: CLIP's symmetric two-tower InfoNCE in O(N·D) memory."""

import torch
from torch import Tensor

from fastclr.errors import UsageError
from fastclr.ops import backends
from fastclr.ops.clip_global import clip_loss_global
from fastclr.ops.family_function import TwoTowerRows
from fastclr.ops.family_validation import check_features, check_logit_scale
from fastclr.ops.global_negatives import distributed_world_size
from fastclr.ops.validation import UsageTypeError, check_reduction


def check_towers(a: Tensor, b: Tensor) -> None:
    check_features("image_features", a, (2,), "[N, D]")
    check_features("text_features", b, (2,), "[N, D]")
    if a.shape != b.shape:
        raise UsageError(
            f"image_features and text_features must have the same shape [N, D] (row k of each "
            f"is a pair), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise UsageError(f"image_features is on {a.device} but text_features on {b.device}")
    if a.dtype != b.dtype:
        raise UsageTypeError(
            f"image_features is {a.dtype} but text_features {b.dtype}: cast both to one dtype"
        )


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: float | Tensor,
    *,
    reduction: str = "mean",
    backend: str = "auto",
    gather_distributed: bool = False,
) -> Tensor:
    """CLIP's contrastive loss (Radford et al., 2021) as OpenCLIP's ClipLoss computes it.

    logits = logit_scale · image_features @ text_featuresᵀ  [N, N], pair k on the diagonal;
    L = ( CE(logits, arange N) + CE(logitsᵀ, arange N) ) / 2, each CE a mean over rows.

    Args:
        image_features, text_features: [N, D], same dtype and device. Used as given, like
            OpenCLIP's ClipLoss: normalize them in the model (OpenCLIP's encoders do).
        logit_scale: the multiplier itself (OpenCLIP passes model.logit_scale.exp()), a number or
            one-element tensor > 0; a tensor that requires grad gets dL/dlogit_scale.
        reduction: "mean" (OpenCLIP's value), "sum", or "none": [2, N], row 0 the image->text
            cross-entropies, row 1 the text->image ones ("mean" is their mean).
        backend: "auto" (the Triton kernels for CUDA tensors where usable, else the spec),
            "chunked" (the spec, any device) or "triton" (fused kernels, one row-parallel call
            per tower); "cuda" has no CLIP kernels and is refused by name.
        gather_distributed: every rank's pairs are negatives of every row (torch.distributed),
            exact gradients (fastclr/ops/clip_global.py): "mean"/"sum" return the global value,
            "none" the local [2, n] rows; without a process group or with one rank, the
            single-process loss.

    Returns:
        fp32 (fp64 for fp64 inputs) scalar, or [2, N] ([2, n] local rows across ranks).

    Memory: the two [N, D] towers in the accumulation dtype plus O(block·N) tiles; never N x N.
    Differentiable once.
    """
    check_towers(image_features, text_features)
    scale, scale_tensor = check_logit_scale(logit_scale)
    check_reduction(reduction)
    chosen = backends.resolve_member(
        "clip_loss", backend, image_features.device, image_features.dtype
    )
    if gather_distributed and distributed_world_size() > 1:
        return clip_loss_global(
            image_features,
            text_features,
            scale,
            reduction,
            scale_tensor=scale_tensor,
            backend=chosen,
        )
    labels = torch.arange(image_features.shape[0], device=image_features.device)
    lse_a, pos_a, lse_b, pos_b = TwoTowerRows.apply(
        image_features, text_features, labels, scale_tensor, scale, chosen
    )
    losses = torch.stack([lse_a - pos_a, lse_b - pos_b])
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses
