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
    computation, one host sync) for non-finite scores or scores that span more than the dtype's
    exp range at this epsilon (about 87·ε in fp32), which would otherwise give NaN codes.
    """
    world = distributed_world_size() if distributed else 1
    check_sinkhorn_arguments(scores, epsilon, iterations, world)
    work = scores.double() if scores.dtype == torch.float64 else scores.float()
    top = work.max()
    if world > 1:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    q = torch.exp((work - top) / epsilon).t()  # [K, B]; the max entry is 1, so the sum is >= 1
    # one all_reduce for the global sum, the global batch and the samples whose exp underflowed
    # to all zeros (NaN columns on their rank alone: every rank must learn of them to raise)
    empty = (q.sum(dim=0) == 0).sum().to(q.dtype)
    totals = torch.stack([q.sum(), q.new_tensor(q.shape[1]), empty])
    if world > 1:
        dist.all_reduce(totals)
    total, batch, empty = totals.unbind()
    prototypes = q.shape[0]
    q /= total
    for _ in range(iterations):
        row_sums = q.sum(dim=1, keepdim=True)
        if world > 1:
            dist.all_reduce(row_sums)
        q /= row_sums * prototypes
        q /= q.sum(dim=0, keepdim=True) * batch
    codes = (q * batch).t()
    # one host sync; non-finite scores and all-zero prototype rows reach every rank through the
    # all_reduces, empty sample columns through `empty`
    if not (torch.isfinite(codes).all() & (empty == 0)):
        raise UsageError(_non_finite_reason(scores, epsilon, work.dtype))
    return codes


def _non_finite_reason(scores: Tensor, epsilon: float, dtype: torch.dtype) -> str:
    if not torch.isfinite(scores).all():
        return "scores has NaN or infinite values: Sinkhorn codes need finite scores"
    return (
        f"Sinkhorn codes underflow in {dtype}: a prototype's or a sample's scores all lie more "
        f"than {-math.log(torch.finfo(dtype).tiny):.0f}·epsilon below the largest score "
        f"(epsilon={epsilon}); normalize the features and prototypes (SwAV's scores are cosines) "
        f"or raise epsilon"
    )
