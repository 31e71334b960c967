"""kNN monitor: weighted-kNN top-1 of the backbone on the labelled splits, during training.

The train split (unaugmented) is the bank, the val split the queries; cosine similarity, k=200
(capped at the bank size), votes weighted by exp(sim / 0.1) as in InstDisc. Run on the random-init
encoder before training and after each epoch, it shows whether the features are learning anything.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastclr.eval.features import extract_features
from fastclr.eval.knn import knn_top1


class KNNMonitor:
    """Holds the eval images once; `monitor(backbone)` -> top-1 in percent, or None if unlabelled."""

    def __init__(
        self,
        bank: tuple[Tensor, Tensor],
        queries: tuple[Tensor, Tensor],
        *,
        device: torch.device,
        k: int = 200,
        temperature: float = 0.1,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = True,
    ) -> None:
        (self.bank_images, self.bank_labels), (self.query_images, self.query_labels) = bank, queries
        self.device, self.k, self.temperature = device, k, temperature
        self.autocast_dtype, self.channels_last = autocast_dtype, channels_last

    @classmethod
    def from_data(
        cls, data: str, image_size: int | None, max_images: int | None = None, **kwargs
    ) -> KNNMonitor:
        """The train split of `data` as the bank, its val split as queries (each at most
        `max_images`, an evenly spaced subset)."""
        from fastclr.data import load_eval_split

        bank = load_eval_split(data, image_size=image_size, split="train", max_images=max_images)
        queries = load_eval_split(data, image_size=image_size, split="val", max_images=max_images)
        return cls(bank, queries, **kwargs)

    @property
    def labelled(self) -> bool:
        return bool((self.bank_labels >= 0).all()) and bool((self.query_labels >= 0).all())

    def features(self, backbone: nn.Module, images: Tensor) -> Tensor:
        return extract_features(
            backbone,
            images,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
            channels_last=self.channels_last,
        )

    def __call__(self, backbone: nn.Module) -> float | None:
        if not self.labelled:
            return None
        return knn_top1(
            self.features(backbone, self.bank_images),
            self.bank_labels,
            self.features(backbone, self.query_images),
            self.query_labels,
            k=self.k,
            temperature=self.temperature,
        )
