"""fastclr.ops.nt_xent: the drop-in NT-Xent (SimCLR) loss with a choice of backends."""

from torch import Tensor

from fastclr.ops import backends, primitives
from fastclr.ops.family_validation import check_dcl_sigma, check_negatives
from fastclr.ops.function import nt_xent_rows, reduce_rows
from fastclr.ops.global_negatives import distributed_world_size, nt_xent_global
from fastclr.ops.nt_xent_family import nt_xent_family
from fastclr.ops.reference import nt_xent_reference
from fastclr.ops.validation import check_projections, check_reduction, check_temperature


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor = 0.5,
    *,
    reduction: str = "mean",
    backend: str = "auto",
    gather_distributed: bool = False,
    negatives: Tensor | None = None,
    decoupled: bool = False,
    dcl_weight_sigma: float | None = None,
) -> Tensor:
    """NT-Xent loss of SimCLR (Chen et al., 2020) on two batches of projections.

    L = 1/(2N) sum_k [l(k, k+N) + l(k+N, k)],
    l(i, j) = -log( exp(sim(z_i, z_j)/tau) / sum_{k != i} exp(sim(z_i, z_k)/tau) ), sim = cosine,
    over the rows of cat(z1, z2).

    Args:
        z1, z2: [N, D] projections of the two views, unnormalized, any float dtype, same device.
            Row k of z1 and row k of z2 are views of the same image.
        temperature: tau > 0 (SimCLR: 0.1 at large batch, 0.5 at small): a real number (int,
            float, numpy scalar) or a one-element tensor. A tensor that requires grad (e.g. an
            nn.Parameter) gets its gradient dL/dtau in every backend; on CUDA its value is read on
            the host once per call (the kernels take tau by value), under torch.compile a graph
            break.
        reduction: "mean" (the paper's L), "sum", or "none" ([2N] per-row losses, cat(z1, z2) order).
        backend: "auto" (best usable: Triton/CUDA kernels for CUDA tensors, else "chunked"),
            "reference" (plain PyTorch, O(N^2) memory), "chunked" (PyTorch row blocks, O(N*D)),
            "triton" or "cuda" (fused kernels, O(N*D)). With negatives or decoupled, "triton"
            (and "auto" on CUDA) runs the family kernels, "chunked" (and "auto" on CPU) the family
            spec (fastclr/ops/family.py); "cuda" and "reference" lack them and are refused by name.
        gather_distributed: use every rank's rows as negatives (torch.distributed); without a
            process group, or with a world size of 1, the single-process loss. With negatives,
            each rank's queue joins its own rows' denominators (pass the same queue on every
            rank for the single-process loss); DCLW weights are over the local batch (lightly).
        negatives: [K, D] extra rows that serve only as negatives of every row (a MoCo v2 queue,
            lightly's memory bank), same dtype and device, not requiring grad; normalized like
            z1, z2; the in-batch negatives stay. None: plain NT-Xent.
        decoupled: leave the positive out of each denominator (DCL, Yeh et al. 2022; lightly's
            DCLLoss): l(i, j) = -sim(z_i, z_j)/tau + log sum_{k != i, j} exp(sim(z_i, z_k)/tau).
        dcl_weight_sigma: with decoupled=True, weight the positive term by DCLW's von Mises-Fisher
            weights w_k = 2 - N softmax_k(sim(z1_k, z2_k) / sigma) (detached; lightly's DCLWLoss,
            sigma = 0.5).

    Returns:
        The loss: a scalar, or [2N] with reduction="none". fp32 for fp16/bf16/fp32 inputs (the
        memory-efficient backends accumulate in fp32), fp64 for fp64; "reference" keeps the
        inputs' dtype.

    Zero rows normalize as F.normalize does (to zero, never NaN). NaN or Inf in the inputs
    propagates to the loss, as it does in the reference: it is not masked.

    Works under torch.compile (dynamic shapes) and torch.func (grad, vmap, jacrev). The
    memory-efficient backends are differentiable once; "reference" to any order.

    Raises:
        fastclr.errors.UsageError (a ValueError; a TypeError too for a wrong type) naming the
        argument and the fix.
    """
    check_projections(z1, z2)
    tau, tau_tensor = check_temperature(temperature)
    check_reduction(reduction)
    if negatives is not None or decoupled or dcl_weight_sigma is not None:
        check_dcl_sigma(dcl_weight_sigma, decoupled)
        if negatives is not None:
            check_negatives(negatives, z1)
        return nt_xent_family(
            z1,
            z2,
            tau,
            reduction,
            backend,
            temperature_tensor=tau_tensor,
            negatives=negatives,
            decoupled=decoupled,
            dcl_weight_sigma=dcl_weight_sigma,
            gather=gather_distributed and distributed_world_size() > 1,
        )
    chosen = backends.BACKENDS[backends.resolve_name(backend, z1.device, z1.dtype)]
    if gather_distributed and distributed_world_size() > 1:
        # Global negatives across torch.distributed ranks; on one process, the code below.
        return nt_xent_global(z1, z2, tau, reduction, chosen.name, temperature_tensor=tau_tensor)
    if chosen.module is None:
        return nt_xent_reference(z1, z2, tau if tau_tensor is None else tau_tensor, reduction)
    rows = nt_xent_rows(z1, z2, tau, primitives.NAMED[chosen.name], temperature_tensor=tau_tensor)
    return reduce_rows(rows, reduction)
