"""fastclr.ops.sup_con: the supervised contrastive loss (and multi-view SimCLR) in O(M·D) memory."""

import torch
from torch import Tensor

from fastclr.ops import backends
from fastclr.ops.family_function import AnchorRows, normalize_rows
from fastclr.ops.family_validation import check_features, check_labels
from fastclr.ops.global_negatives import check_same_rows, distributed_world_size
from fastclr.ops.sup_con_global import GlobalAnchorRows, global_reduction
from fastclr.ops.validation import check_reduction, check_temperature


def sup_con(
    z: Tensor,
    labels: Tensor,
    temperature: float | Tensor = 0.1,
    *,
    reduction: str = "mean",
    backend: str = "auto",
    gather_distributed: bool = False,
) -> Tensor:
    """Supervised contrastive loss L_out of Khosla et al. (2020), eq. 2, over cosine similarities.

    For anchor i with positives P(i) = {p != i : label_p == label_i} among all rows,
        l_i = -(1/|P(i)|) sum_{p in P(i)} log( exp(s_ip) / sum_{k != i} exp(s_ik) ),
        s_ik = <z_i, z_k> / (|z_i| |z_k| tau).
    With labels = image indices it is multi-view SimCLR; with two views it equals nt_xent.

    Args:
        z: [M, D] rows, or [B, V, D] (V views of B samples, the SupCon authors' and PML's shape);
            unnormalized, any float dtype.
        labels: [M] (or [B] for [B, V, D]) integer class ids on z's device; some label must occur
            twice unless V >= 2 (checked on the host: a sync point on CUDA).
        temperature: tau > 0 (SupCon: 0.1; 0.07 in the authors' code): a number or one-element
            tensor; one that requires grad gets dL/dtau.
        reduction: "mean" over the anchors that have a positive, "sum", or "none" (per-anchor
            losses shaped like z's leading dims, [M] or [B, V]).
        backend: "auto" (the Triton kernels for CUDA tensors where usable, else the spec),
            "chunked" (the spec, any device) or "triton" (fused kernels, fastclr/ops/
            family_triton.py); "cuda" has no SupCon kernels and is refused by name.
        gather_distributed: every rank's rows are negatives and positives of every anchor
            (torch.distributed), exact gradients (fastclr/ops/sup_con_global.py): "mean"/"sum" are
            the global values, "none" the local rows. Labels are compared across ranks: class ids,
            or globally unique sample ids (rank·B + arange(B)) for multi-view SimCLR. Without a
            process group or with one rank, the single-process loss.

    Anchors without a positive (a label that occurs once) have loss 0, no gradient, and do not
    count in the mean: the convention of PML's SupConLoss. Their number is
    `((labels[:, None] == labels).sum(1) == 1).sum()` over the row labels.

    Returns:
        fp32 (fp64 for fp64 inputs) scalar, or the per-anchor losses.

    Memory: the normalized rows M·D plus O(block·M) tiles; never M x M. Differentiable once.
    """
    check_features("z", z, (2, 3), "[M, D] rows or [B, V, D] views")
    views = z.shape[1] if z.dim() == 3 else 1
    gather = gather_distributed and distributed_world_size() > 1
    what = "sample" if z.dim() == 3 else "row of z"
    # Across ranks a positive may live on another rank: checked globally after the forward.
    check_labels(labels, z.shape[0], z.device, what, views, require_positive=not gather)
    tau, tau_tensor = check_temperature(temperature)
    check_reduction(reduction)
    chosen = backends.resolve_member("sup_con", backend, z.device, z.dtype)
    # View-major rows, cat(view 0, view 1, ...): nt_xent's cat(z1, z2) order for V = 2.
    rows = z.transpose(0, 1).flatten(0, 1) if z.dim() == 3 else z
    row_labels = labels.to(torch.int64).repeat(views)
    scale = None if tau_tensor is None else 1.0 / tau_tensor
    if gather:
        check_same_rows(rows.shape[0], rows.shape[1], None)
        lse, pos, count = GlobalAnchorRows.apply(
            normalize_rows(rows), row_labels, scale, 1.0 / tau, None, None, False, chosen
        )
    else:
        lse, pos, count = AnchorRows.apply(
            normalize_rows(rows), row_labels, None, scale, 1.0 / tau, False, chosen
        )
    has_positive = count > 0
    losses = torch.where(has_positive, lse - pos, 0.0)
    if gather and reduction != "none":
        return global_reduction(losses, has_positive, reduction)
    if reduction == "mean":
        return losses.sum() / has_positive.sum()
    if reduction == "sum":
        return losses.sum()
    return losses.unflatten(0, (views, -1)).T if z.dim() == 3 else losses
