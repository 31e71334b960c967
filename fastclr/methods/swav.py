"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments"), with multi-crop.

    z_v  = normalize(g(f(x_v)))                 every view v (global views first, then local ones)
    s_v  = C z_v                                 scores against K unit prototypes C [K, D]
    q_i  = sinkhorn_knopp(s_i)                   codes of the global views i (no gradient)
    loss = swapped_prediction_loss(s, q, T)      each view predicts the others' codes

As SwAV's code: the prototypes are renormalized to unit rows before every step and get no update
for the first `freeze_prototypes_steps` steps (default: the first epoch; the ImageNet recipe 313);
views of one size go through the backbone together (multi-resolution); Sinkhorn-Knopp (epsilon
0.05, 3 iterations) sums over every rank's batch (fastclr.ops.sinkhorn, all_reduce). Projector BN
sees the global batch under DDP (SyncBatchNorm).

Queue (--queue-size Q > 0, for batches below the K prototypes): the newest Q embeddings of each
global view, gathered from every rank, so every rank (and the checkpoint) holds the same queue;
rank r scores its own Q / world of them ahead of its batch in Sinkhorn (SwAV's per-rank queues of
queue_length / world_size). It joins once full (SwAV: from a chosen epoch, 15 in its recipes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from fastclr.errors import UsageError
from fastclr.methods.base import Method, feature_width
from fastclr.methods.distributed import gather_rows, world_size
from fastclr.methods.heads import mlp
from fastclr.ops.sinkhorn import sinkhorn_knopp
from fastclr.ops.swav_loss import swapped_prediction_loss


def by_resolution(views: list[Tensor]) -> list[list[Tensor]]:
    """Consecutive views of the same shape, grouped: one backbone pass per image size."""
    groups: list[list[Tensor]] = []
    for view in views:
        if groups and groups[-1][0].shape == view.shape:
            groups[-1].append(view)
        else:
            groups.append([view])
    return groups


class SwAV(Method):
    name = "swav"
    global_bn = ("projector",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        proj_dim = config.get("proj_dim") or 128
        hidden = feature_width(config, self.feature_dim)
        self.projector = mlp(self.feature_dim, hidden, proj_dim, config.get("proj_layers") or 2)
        self.prototypes = nn.Linear(proj_dim, config.get("prototypes") or 3000, bias=False)
        self.temperature = config.get("temperature") or 0.1
        self.epsilon = config.get("sinkhorn_epsilon") or 0.05
        self.iterations = config.get("sinkhorn_iterations") or 3
        freeze = config.get("freeze_prototypes_steps")
        self.freeze_steps = config.get("steps_per_epoch", 0) if freeze is None else freeze
        self.global_views = config.get("views") or 2
        queue_size = config.get("queue_size") or 0
        self.register_buffer("queue", torch.zeros(self.global_views, queue_size, proj_dim))
        self._embeddings: Tensor | None = None

    def check_data(self, num_images: int, batch_size: int) -> None:
        queue, prototypes = self.queue.shape[1], self.prototypes.out_features
        if batch_size + queue < prototypes:
            raise UsageError(
                f"--batch-size {batch_size} (+ --queue-size {queue}) is below the {prototypes} "
                "prototypes: Sinkhorn's equal split over the prototypes then gives no sample a "
                "clear code; pass --queue-size (SwAV: 3840 at batch 256) or fewer --prototypes"
            )
        if queue % world_size():
            raise UsageError(
                f"--queue-size {queue} does not split among {world_size()} ranks: pass a "
                f"multiple of {world_size()}"
            )

    def _codes(self, scores: Tensor, view: int, step: int) -> Tensor:
        """Sinkhorn codes [B, K] of one global view's scores, with this rank's queue slice once
        the queue is full (after `step` steps it holds step x the global batch embeddings)."""
        batch = len(scores)
        scores = scores.detach().float()
        queue_size = self.queue.shape[1]
        if queue_size and step * batch * world_size() >= queue_size:
            share = queue_size // world_size()
            rank = dist.get_rank() if world_size() > 1 else 0
            mine = self.queue[view, rank * share : (rank + 1) * share]
            scores = torch.cat([mine @ self.prototypes.weight.detach().float().T, scores])
        return sinkhorn_knopp(scores, self.epsilon, self.iterations, distributed=True)[-batch:]

    def forward(self, views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        batch = views[0].shape[0]
        features = torch.cat([self.backbone(torch.cat(group)) for group in by_resolution(views)])
        z = F.normalize(self.projector(features), dim=1)
        scores = list(self.prototypes(z).split(batch))
        codes = {i: self._codes(scores[i], i, step) for i in range(self.global_views)}
        self._embeddings = z[: self.global_views * batch].detach()
        return swapped_prediction_loss(scores, codes, self.temperature)

    def after_backward(self, step: int) -> None:
        if step < self.freeze_steps:
            self.prototypes.weight.grad = None  # frozen: no update, no momentum

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Push this step's global-view embeddings (every rank's) to the front of the queue."""
        queue_size = self.queue.shape[1]
        if not queue_size or self._embeddings is None:
            return
        for view, embeddings in enumerate(self._embeddings.chunk(self.global_views)):
            newest = torch.cat([gather_rows(embeddings).to(self.queue.dtype), self.queue[view]])
            self.queue[view] = newest[:queue_size]
        self._embeddings = None
