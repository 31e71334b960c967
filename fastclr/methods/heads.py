"""The MLP heads of the methods (projectors and predictors), as each paper builds them."""

from __future__ import annotations

from torch import nn


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    layers: int,
    *,
    batch_norm: bool = True,
    last_batch_norm: bool = False,
    last_affine: bool = False,
) -> nn.Sequential:
    """(Linear -> [BN] -> ReLU) x (layers - 1) -> Linear [-> BN without affine parameters].

    batch_norm: BN after each hidden Linear (BYOL, SimSiam, SwAV; MoCo v2's head has none).
    last_batch_norm: SimSiam's projector ends in a BN (affine=False), its output is the embedding;
    last_affine: that BN with a scale and shift (SimCLR's code, fastclr.model.ProjectionHead).
    Hidden Linears before a BN have no bias (the BN's shift replaces it).
    """
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers - 1):
        blocks.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
        if batch_norm:
            blocks.append(nn.BatchNorm1d(hidden_dim))
        blocks.append(nn.ReLU(inplace=True))
        width = hidden_dim
    blocks.append(nn.Linear(width, out_dim, bias=not last_batch_norm))
    if last_batch_norm:
        blocks.append(nn.BatchNorm1d(out_dim, affine=last_affine))
    return nn.Sequential(*blocks)
