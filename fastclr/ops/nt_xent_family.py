"""NT-Xent with a queue of negatives (MoCo v2 style) and decoupled NT-Xent (DCL, DCLW), on the
family's spec primitives (fastclr/ops/family.py)."""

import torch
import torch.distributed as dist
from torch import Tensor

from fastclr.errors import UsageError
from fastclr.ops import backends
from fastclr.ops.family_function import AnchorRows, normalize_rows
from fastclr.ops.function import normalized_rows, reduce_rows
from fastclr.ops.global_negatives import check_same_rows
from fastclr.ops.sup_con_global import GlobalAnchorRows, global_reduction


def von_mises_fisher_weights(z_hat: Tensor, sigma: float) -> Tensor:
    """DCLW's positive weights w_k = 2 - N softmax_k(<ẑ1_k, ẑ2_k> / sigma), k < N, repeated for
    both views: [2N], detached (as lightly's negative_mises_fisher_weights)."""
    z1_hat, z2_hat = z_hat.detach().chunk(2)
    work = torch.float64 if z_hat.dtype == torch.float64 else torch.float32
    similarity = (z1_hat.to(work) * z2_hat.to(work)).sum(1) / sigma
    weights = 2 - z1_hat.shape[0] * torch.softmax(similarity, dim=0)
    return weights.repeat(2)


def nt_xent_family(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    reduction: str,
    backend: str,
    *,
    temperature_tensor: Tensor | None,
    negatives: Tensor | None,
    decoupled: bool,
    dcl_weight_sigma: float | None,
    gather: bool = False,
) -> Tensor:
    """nt_xent's per-row losses with a queue and/or decoupling (see fastclr.ops.nt_xent); inputs
    already checked. Rows cat(z1, z2); the queue rows are normalized like them and get no gradient.

    gather: every rank's rows as negatives (fastclr/ops/sup_con_global.py; the queue and the DCLW
    weights stay local), with global_negatives' gradient convention; needs a process group.

    Per row i (positive p = the other view): lse_i over every other row and the queue (decoupled:
    also without p), loss_i = lse_i - w_i s_ip with w_i = 1, or DCLW's weights.
    """
    n = z1.shape[0]
    if decoupled and n == 1 and (negatives is None or negatives.shape[0] == 0):
        raise UsageError(
            "decoupled=True with N = 1 pair leaves no negative in the denominator: pass at least "
            "two pairs (or a queue of negatives)"
        )
    member = "dcl" if decoupled else "nt_xent_negatives"  # names of fastclr.ops.backends.MEMBERS
    chosen = backends.resolve_member(member, backend, z1.device, z1.dtype)
    z_hat = normalized_rows(z1, z2)
    labels = torch.arange(n, device=z1.device).repeat(2)
    queue = None if negatives is None else normalize_rows(negatives)
    scale = None if temperature_tensor is None else 1.0 / temperature_tensor
    if gather:
        check_same_rows(n, z1.shape[1], None)
        labels = labels + dist.get_rank() * n  # global image ids: rank r's image k is r·n + k
        lse, pos, _ = GlobalAnchorRows.apply(
            z_hat, labels, scale, 1.0 / temperature, None, queue, decoupled, chosen
        )
    else:
        lse, pos, _ = AnchorRows.apply(
            z_hat, labels, queue, scale, 1.0 / temperature, decoupled, chosen
        )
    if dcl_weight_sigma is not None:
        # Over the local batch, as lightly's DCLWLoss computes them with gather_distributed.
        pos = pos * von_mises_fisher_weights(z_hat, dcl_weight_sigma).to(pos.dtype)
    rows = lse - pos
    if gather and reduction != "none":
        return global_reduction(rows, torch.ones_like(rows, dtype=torch.bool), reduction)
    return reduce_rows(rows, reduction)
