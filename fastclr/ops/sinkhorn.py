"""SwAV's Sinkhorn–Knopp codes (Caron et al. 2020, eq. 3 and facebookresearch/swav main_swav.py
`distributed_sinkhorn`), optionally over every rank's batch.

With scores S [B, K] (sample-prototype similarities; B = the global batch) and epsilon ε:

    Q = exp(S / ε)ᵀ                         [K, B]
    Q /= Σ Q                                 (the global sum: all_reduce)
    repeat `iterations` times:
        Q /= rowsum(Q) · K                   each prototype gets weight 1/K  (row sums: all_reduce)
        Q /= colsum(Q) · B                   each sample gets weight 1/B     (columns are local)
    codes = (B · Q)ᵀ                         [B, K], every row sums to 1

One change from SwAV's code: the scores' global maximum is subtracted before the exponential
(exp((S - max S) / ε)). The first normalization divides by the global sum, so the constant factor
exp(-max S / ε) cancels exactly: the codes are mathematically identical, but SwAV's exp(S / ε)
overflows fp32 once S / ε > 88 (S > 4.4 at ε = 0.05), and this form cannot overflow.

Range. Both forms need every sample's and every prototype's best entry exp((s - max S) / ε) to stay
a normal float after the division by the sum (at most B·K): the best score of each must lie within
(87 - ln(B·K))·ε of the largest score in fp32 (71·ε at B = 4096, K = 3000; ~700·ε in fp64). Cosine
scores, as SwAV's, span at most 2 = 40·ε at ε = 0.05. Outside that range sinkhorn_knopp raises
rather than return NaN or wrong codes.

Batch convention. The equipartition gives every prototype B/K of the B samples' unit masses; with
B < K (SwAV: K = 3000 prototypes, so small batches add a queue of past features to the scores) the
codes cannot be near one-hot and are softer, which is allowed here. A global batch of one sample is
refused: its only code is uniform whatever the scores.
"""

import math
import numbers

import torch
import torch.distributed as dist
from torch import Tensor

from fastclr.errors import UsageError
from fastclr.ops.global_negatives import distributed_world_size
from fastclr.ops.validation import FLOAT_DTYPES, UsageTypeError


def check_sinkhorn_arguments(scores: Tensor, epsilon: float, iterations: int, world: int) -> None:
    """Raise UsageError/UsageTypeError for arguments sinkhorn_knopp cannot use."""
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise UsageTypeError(f"scores must be a [B, K] tensor (samples x prototypes), got {shape}")
    if scores.dtype not in FLOAT_DTYPES:
        raise UsageTypeError(f"scores has dtype {scores.dtype}: pass floating-point scores")
    batch, prototypes = scores.shape
    if prototypes < 2:
        raise UsageError(f"scores has K={prototypes} prototypes: Sinkhorn needs K >= 2")
    if batch < 1 or (world == 1 and batch < 2):
        raise UsageError(
            f"scores has B={batch} samples: Sinkhorn's equipartition needs a batch of >= 2 "
            f"(one sample's code is uniform whatever its scores); use a larger batch or a queue"
        )
    if not (isinstance(epsilon, numbers.Real) and math.isfinite(epsilon) and epsilon > 0):
        raise UsageError(f"epsilon must be a number > 0 (SwAV: 0.05), got {epsilon!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise UsageError(f"iterations must be an int >= 1 (SwAV: 3), got {iterations!r}")


@torch.no_grad()
def sinkhorn_knopp(
    scores: Tensor, epsilon: float = 0.05, iterations: int = 3, *, distributed: bool = False
) -> Tensor:
    """SwAV's codes of `scores` (see the module docstring): [B, K], rows summing to 1.

    Args:
        scores: [B, K] float, this rank's samples against the K prototypes (and any queue rows
            prepended, as SwAV does; take the last B rows of the codes then). No gradient flows.
        epsilon: the entropy regularization ε (SwAV: 0.05; smaller is sharper).
        iterations: Sinkhorn iterations (SwAV: 3).
        distributed: the global batch is every rank's scores (torch.distributed: 2 + iterations
            all_reduces, every rank must call); without a process group or with one rank, the
            single-process codes. Ranks may hold different B.

    Returns:
        [B, K] codes of this rank's samples, fp32 (fp64 for fp64 scores), no grad.

    Raises UsageError for a batch of one sample, K < 2, bad epsilon/iterations, and (after the
    computation, one host sync, on every rank alike) for non-finite scores or scores outside the
    range of the module docstring.
    """
    world = distributed_world_size() if distributed else 1
    check_sinkhorn_arguments(scores, epsilon, iterations, world)
    work = scores.double() if scores.dtype == torch.float64 else scores.float()
    prototype_top = work.max(dim=0).values  # [K] best score of each prototype
    if world > 1:
        dist.all_reduce(prototype_top, op=dist.ReduceOp.MAX)
    top = prototype_top.max()
    q = torch.exp((work - top) / epsilon).t()  # [K, B]; the max entry is 1, so the sum is >= 1
    # Samples and prototypes whose best entry would leave the dtype's normal range (after the
    # division by a total of at most B·K) would get NaN or wrong codes. They and non-finite scores
    # are counted on every rank and summed with the total, so that every rank raises alike.
    batch_bound = work.shape[0] * world * work.shape[1]
    floor = top + epsilon * (math.log(torch.finfo(work.dtype).tiny) + math.log(batch_bound))
    non_finite = (~torch.isfinite(work)).sum()
    narrow = (work.max(dim=1).values < floor).sum() + (prototype_top < floor).sum()
    counts = [q.new_tensor(q.shape[1]), non_finite.to(q.dtype), narrow.to(q.dtype)]
    totals = torch.stack([q.sum(), *counts])
    if world > 1:
        dist.all_reduce(totals)
    total, batch, non_finite, narrow = totals.unbind()
    prototypes = q.shape[0]
    q /= total
    for _ in range(iterations):
        row_sums = q.sum(dim=1, keepdim=True)
        if world > 1:
            dist.all_reduce(row_sums)
        q /= row_sums * prototypes
        q /= q.sum(dim=0, keepdim=True) * batch
    if non_finite + narrow > 0:  # the one host sync
        if non_finite > 0:
            raise UsageError(
                "scores has NaN or infinite values (on this or another rank): pass finite scores"
            )
        raise UsageError(_narrow_reason(epsilon, work.dtype, batch_bound))
    return (q * batch).t()


def _narrow_reason(epsilon: float, dtype: torch.dtype, bound: int) -> str:
    span = -math.log(torch.finfo(dtype).tiny) - math.log(bound)
    return (
        f"Sinkhorn codes underflow in {dtype}: the best score of a prototype or a sample lies more "
        f"than {span:.0f}·epsilon below the largest score (epsilon={epsilon}, on this or another "
        f"rank); normalize the features and prototypes (SwAV's scores are cosines), raise "
        f"epsilon, or pass float64 scores"
    )
