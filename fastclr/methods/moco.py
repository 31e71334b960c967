"""MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning").

    q = normalize(g_q(f_q(x)))          the online encoder (trained)
    k = normalize(g_k(f_k(x')))         the key encoder: f_k, g_k <- m f_k, g_k + (1 - m) f_q, g_q
    l(q, k) = -log exp(q.k / tau) / (exp(q.k / tau) + sum_{n in queue} exp(q.n / tau))

This is MoCo's InfoNCE exactly: each query is an anchor against its own key and the queue's K
negatives; keys are not anchors and there are no in-batch negatives. `fastclr.ops.nt_xent(...,
negatives=queue)` computes another loss (symmetric NT-Xent over cat(q, k) with the queue added to
every denominator, lightly's NTXentLoss(memory_bank_size) with both views as anchors), so it is not
used here; MoCo's logits are [B, 1 + K], O(B*K) memory like the queue itself.

Symmetrised as in SimSiam's comparison table (and solo-learn's "MoCo v2+"): the loss is
(l(q1, k2) + l(q2, k1)) / 2 and the keys of both views are enqueued (2B per step; the queue holds
the newest K keys of every rank: keys are gathered across ranks before being enqueued).

Shuffle BN: under DDP, the key encoder runs on the global batch permuted across ranks (a
permutation drawn from the step number, the same on every rank), so a key's BN statistics come from
other images than its query's, as in MoCo's code; backbone BN stays per rank (no SyncBN). On one
process (--bn-splits S > 1, as MoCo's authors' one-GPU CIFAR-10 demo) both encoders' BN computes
its statistics over S groups of the batch (fastclr.methods.split_bn), and the keys are shuffled
across the groups, so each group plays one rank.

State: online and key encoders, the queue [K, D] and its write pointer are parameters and buffers,
saved and restored exactly by state_dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from fastclr.errors import UsageError
from fastclr.methods.base import Method, feature_width
from fastclr.methods.distributed import gather_rows, world_size
from fastclr.methods.heads import mlp
from fastclr.methods.momentum import ema_update, momentum_copy
from fastclr.methods.split_bn import split_batchnorm


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's loss: q, k [B, D] and queue [K, D] unit rows -> mean over B of
    -log softmax([q.k, q.queue]/tau)[0], in fp32."""
    q, k, queue = q.float(), k.float(), queue.float()
    positive = (q * k).sum(1, keepdim=True)
    logits = torch.cat([positive, q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


class MoCo(Method):
    name = "moco"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.bn_splits = config.get("bn_splits") or 1
        split_batchnorm(self.backbone, self.bn_splits)
        hidden = feature_width(config, self.feature_dim)
        self.proj_dim = config.get("proj_dim") or 128
        self.head = mlp(
            self.feature_dim, hidden, self.proj_dim, config.get("proj_layers") or 2,
            batch_norm=False,
        )  # fmt: skip
        self.key_backbone = momentum_copy(self.backbone)
        self.key_head = momentum_copy(self.head)
        self.temperature = config.get("temperature") or 0.2
        self.momentum = config.get("target_momentum") or 0.999
        queue_size = config.get("queue_size") or 65536
        # MoCo starts from random unit rows; they are overwritten within K / (2B) steps.
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, self.proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._keys: Tensor | None = None

    def check_data(self, num_images: int, batch_size: int) -> None:
        if len(self.queue) > num_images:
            raise UsageError(
                f"--queue-size {len(self.queue)} is larger than the dataset ({num_images} "
                "images): the queue would hold keys of the same images again, positives among "
                f"them; pass --queue-size {num_images} or less"
            )
        rows = 2 * batch_size // world_size()  # both views of a rank's images, in one BN pass
        if rows < 2 * self.bn_splits:
            raise UsageError(
                f"--bn-splits {self.bn_splits} needs >= 2 images per BN group, and a pass holds "
                f"{rows} (2 views x --batch-size {batch_size} / {world_size()} ranks): pass "
                f"--bn-splits {max(rows // 2, 1)} or less, or a larger --batch-size"
            )

    def _keys_of(self, x: Tensor, step: int) -> Tensor:
        """Normalized keys [n, D] of x [n, 3, H, W], under shuffle BN when distributed or split."""
        encode = lambda images: F.normalize(self.key_head(self.key_backbone(images)), dim=1)  # noqa: E731
        ranks = world_size()
        if ranks == 1 and self.bn_splits == 1:
            return encode(x)  # no groups to shuffle the keys across
        rank = dist.get_rank() if ranks > 1 else 0
        everything = gather_rows(x)
        generator = torch.Generator().manual_seed(step)
        order = torch.randperm(len(everything), generator=generator).to(x.device)
        mine = order.view(ranks, -1)[rank]
        keys = gather_rows(encode(everything[mine]))  # row j is the key of image order[j]
        unshuffled = torch.empty_like(keys)
        unshuffled[order] = keys
        return unshuffled.view(ranks, len(x), -1)[rank]

    def forward(self, views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        q = F.normalize(self.head(self.backbone(torch.cat(views))), dim=1)
        with torch.no_grad():
            k = self._keys_of(torch.cat(views), step)
        q1, q2 = q.chunk(2)
        k1, k2 = k.chunk(2)
        self._keys = k
        # The queue is rewritten only in after_step, once backward (which reads it) has run.
        loss_12 = info_nce(q1, k2, self.queue, self.temperature)
        return (loss_12 + info_nce(q2, k1, self.queue, self.temperature)) / 2

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Enqueue this step's keys (every rank's), then move the key encoder toward the online."""
        if self._keys is not None:
            keys = gather_rows(self._keys).to(self.queue.dtype)
            size = len(self.queue)
            slots = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
            self.queue[slots[-size:]] = keys[-size:]
            self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)
            self._keys = None
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_head, self.head, self.momentum)
