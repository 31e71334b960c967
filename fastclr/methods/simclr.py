"""SimCLR (Chen et al. 2020): NT-Xent over two views, or multi-view / supervised contrastive.

All V views of a batch go through the network as one batch of V*B images (BN statistics cover every
view, as in SimCLR). With two views and loss "ntxent" the loss is `fastclr.ops.nt_xent(z1, z2)`
(the fused kernels); with V > 2 views it is `fastclr.ops.sup_con` with labels = image indices
(multi-view SimCLR, which equals NT-Xent at V = 2); with loss "supcon" it is `sup_con` with the
dataset's class labels (Khosla et al. 2020). Distributed: every rank's rows are negatives
(gather_distributed), image indices made global as rank * B + k.

State dict keys are those of fastclr.model.SimCLRModel (backbone.*, head.net.*): checkpoints of
runs before --method existed load unchanged. With proj_last_bn the head ends in a BN (SimCLR's
code); configs of runs before that setting existed lack it and build the head without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from fastclr.errors import UsageError
from fastclr.methods.base import Method, feature_width
from fastclr.methods.distributed import world_size
from fastclr.model import ProjectionHead
from fastclr.ops import nt_xent, sup_con


class SimCLR(Method):
    name = "simclr"
    global_bn = ("head",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.head = ProjectionHead(
            self.feature_dim,
            feature_width(config, self.feature_dim),
            config.get("proj_dim") or 128,
            config.get("proj_layers") or 2,
            last_batch_norm=bool(config.get("proj_last_bn")),  # absent in older runs' configs
        )
        self.temperature = config.get("temperature") or 0.2
        self.loss_kind = config.get("loss") or "ntxent"
        self.loss_backend = config.get("loss_backend", "auto")
        self._labels_checked = False

    def forward(self, views: list[Tensor], labels: Tensor, step: int) -> Tensor:
        batch = views[0].shape[0]
        z = self.head(self.backbone(torch.cat(views)))
        gather = world_size() > 1
        if len(views) == 2 and self.loss_kind == "ntxent":
            z1, z2 = z.chunk(2)
            return nt_xent(
                z1, z2, self.temperature, backend=self.loss_backend, gather_distributed=gather
            )
        z_views = z.unflatten(0, (len(views), batch)).transpose(0, 1)  # [B, V, D]
        if self.loss_kind == "supcon":
            self._check_labels(labels)
            row_labels = labels
        else:  # multi-view SimCLR: each image is its own class, ids unique across ranks
            offset = dist.get_rank() * batch if gather else 0
            row_labels = torch.arange(batch, device=z.device) + offset
        return sup_con(
            z_views, row_labels, self.temperature, backend=self.loss_backend,
            gather_distributed=gather,
        )  # fmt: skip

    def _check_labels(self, labels: Tensor) -> None:
        """Once per run (a host sync): --loss supcon needs a class for every image."""
        if self._labels_checked:
            return
        if bool((labels < 0).any()):
            raise UsageError(
                "--loss supcon needs class labels, and this data has images without one (an "
                "unlabelled folder or synthetic data): train on a labelled image folder "
                "(PATH/train/<class>/*) or use --loss ntxent"
            )
        self._labels_checked = True
