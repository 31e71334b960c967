"""Frozen-backbone features of a tensor of images, in batches, without gradients."""

import contextlib

import torch
from torch import Tensor, nn


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: Tensor,
    *,
    device: torch.device,
    batch_size: int = 512,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = True,
) -> Tensor:
    """h = backbone(x) for images [M, 3, H, W] (any device) -> [M, F] fp32 on `device`.

    The backbone runs in eval mode (BN uses its running statistics) and is put back in the mode it
    was in. autocast_dtype=None runs in the backbone's own dtype.
    """
    was_training = backbone.training
    backbone.eval()
    amp = (
        torch.autocast(device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    features = []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device, non_blocking=True)
            x = x.contiguous(memory_format=memory_format)
            with amp:
                features.append(backbone(x).float())
    finally:
        backbone.train(was_training)
    return torch.cat(features)
