"""The plain-PyTorch NT-Xent loss: the oracle every fused backend is checked against.

It builds the full 2N x 2N similarity matrix, exactly as a hand-written SimCLR script would, in the
dtype of its inputs. Tests and benchmarks import it from here; nothing else copies it.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent_reference(
    z1: Tensor, z2: Tensor, temperature: float = 0.5, reduction: str = "mean"
) -> Tensor:
    """NT-Xent (SimCLR) loss by materializing the similarity matrix.

    Args:
        z1, z2: [N, D] projections of the two views (unnormalized). Row k of z1 and row k of z2
            are the positive pair; every other row of either view is a negative.
        temperature: softmax temperature tau > 0.
        reduction: "mean" (the paper's L = 1/(2N) sum_k [l(k, k+N) + l(k+N, k)]), "sum", or "none"
            (the 2N per-row losses, rows ordered as cat(z1, z2)).

    Returns:
        The loss in the inputs' dtype: a scalar, or [2N] for reduction="none".

    Memory: O(N^2) — the [2N, 2N] matrix plus its softmax.
    """
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    rows = z.shape[0]
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(rows, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (torch.arange(rows, device=z.device) + rows // 2) % rows
    return F.cross_entropy(logits, positives, reduction=reduction)
