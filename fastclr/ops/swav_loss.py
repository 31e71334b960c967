"""SwAV's swapped-prediction loss (Caron et al. 2020, eq. 1; facebookresearch/swav main_swav.py).

With V views of the same B images (global views first, then multi-crop local ones), scores_v [B, K]
the view's similarities to the K prototypes, and codes q_i [B, K] (sinkhorn_knopp) of the views i
that have codes (SwAV's `crops_for_assign`, the global views 0 and 1):

    p_v = log_softmax(scores_v / T)                                 [B, K]
    L   = mean_i  (1 / (V - 1)) Σ_{v ≠ i}  mean_b ( -Σ_k q_i[b, k] · p_v[b, k] )

Each view's log-softmax is computed once, and Σ_{v ≠ i} p_v = Σ_v p_v - p_i, so the cost is
O(V·B·K) whatever the number of coded views. Codes are targets: they get no gradient and must not
require one.

Under DDP each rank computes L on its own B rows (codes from the distributed Sinkhorn); the average
of the ranks' gradients is the gradient of the global-batch loss when the ranks hold equal B.
"""

import math
import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fastclr.errors import UsageError
from fastclr.ops.validation import FLOAT_DTYPES, UsageTypeError


def _check_scores(scores: Sequence[Tensor]) -> None:
    if isinstance(scores, Tensor) or not isinstance(scores, Sequence) or len(scores) < 2:
        raise UsageError(
            "scores must be a list of >= 2 tensors [B, K], one per view (global views first)"
        )
    first = scores[0]
    if isinstance(first, Tensor) and first.dim() == 2 and min(first.shape) < 1:
        raise UsageError(
            f"scores[0] is {tuple(first.shape)}: pass B >= 1 images, K >= 1 prototypes"
        )
    for v, view in enumerate(scores):
        if not isinstance(view, Tensor) or view.dim() != 2:
            shape = tuple(view.shape) if isinstance(view, Tensor) else type(view).__name__
            raise UsageTypeError(f"scores[{v}] must be a [B, K] tensor, got {shape}")
        if view.dtype not in FLOAT_DTYPES:
            raise UsageTypeError(f"scores[{v}] has dtype {view.dtype}: pass floating-point scores")
        if view.shape != first.shape or view.device != first.device:
            raise UsageError(
                f"scores[{v}] is {tuple(view.shape)} on {view.device} but scores[0] is "
                f"{tuple(first.shape)} on {first.device}: every view scores the same B images "
                f"against the same K prototypes"
            )


def _coded_views(codes: Sequence[Tensor] | Mapping[int, Tensor], views: int) -> dict[int, Tensor]:
    """{view index: codes}: a sequence codes the first len(codes) views, a mapping names them."""
    if isinstance(codes, Tensor) or not isinstance(codes, Sequence | Mapping):
        raise UsageError(
            "codes must be a list of [B, K] tensors (codes of views 0, 1, ...) or a dict "
            "{view index: [B, K] codes}"
        )
    coded = dict(codes) if isinstance(codes, Mapping) else dict(enumerate(codes))
    if not coded:
        raise UsageError("codes is empty: pass the codes of at least one view (SwAV: views 0, 1)")
    bad = [i for i in coded if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < views]
    if bad:
        raise UsageError(f"codes names views {bad}: view indices run over 0..{views - 1}")
    return coded


def _check_codes(coded: dict[int, Tensor], like: Tensor) -> None:
    for i, q in coded.items():
        if not isinstance(q, Tensor) or q.shape != like.shape or q.device != like.device:
            got = f"{tuple(q.shape)} on {q.device}" if isinstance(q, Tensor) else type(q).__name__
            raise UsageError(
                f"codes of view {i} must be [B, K] = {tuple(like.shape)} on {like.device} like "
                f"the scores, got {got}"
            )
        if q.dtype not in FLOAT_DTYPES:
            raise UsageTypeError(f"codes of view {i} have dtype {q.dtype}: pass float codes")
        if q.requires_grad:
            raise UsageError(
                f"codes of view {i} require grad: codes are targets; pass sinkhorn_knopp's output "
                f"(it runs under no_grad) or codes.detach()"
            )


def swapped_prediction_loss(
    scores: Sequence[Tensor],
    codes: Sequence[Tensor] | Mapping[int, Tensor],
    temperature: float = 0.1,
) -> Tensor:
    """SwAV's loss (see the module docstring): a scalar.

    Args:
        scores: V >= 2 tensors [B, K], one per view, same B, K, device (SwAV: prototype scores of
            2 global then 6 local crops).
        codes: the targets, [B, K] each, no grad: a list (codes of views 0, 1, ...) or a dict
            {view index: codes} (SwAV's crops_for_assign).
        temperature: T > 0 of the predictions' softmax (SwAV: 0.1).

    Returns:
        Scalar, fp32 (fp64 when any scores are fp64): fp16/bf16 scores are upcast for the
        log-softmax.
    """
    _check_scores(scores)
    coded = _coded_views(codes, len(scores))
    _check_codes(coded, scores[0])
    if not (
        isinstance(temperature, numbers.Real) and math.isfinite(temperature) and temperature > 0
    ):
        raise UsageError(f"temperature must be a number > 0 (SwAV: 0.1), got {temperature!r}")
    dtype = torch.float64 if any(v.dtype == torch.float64 for v in scores) else torch.float32
    log_p = [F.log_softmax(view.to(dtype) / temperature, dim=1) for view in scores]
    log_p_sum = sum(log_p[1:], start=log_p[0])
    batch = scores[0].shape[0]
    loss = scores[0].new_zeros((), dtype=dtype)
    for i, q in coded.items():
        cross = -(q.to(dtype) * (log_p_sum - log_p[i])).sum()  # over b, k and the V - 1 views
        loss = loss + cross / (batch * (len(scores) - 1))
    return loss / len(coded)
