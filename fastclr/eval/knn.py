"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, InstDisc).

Each query votes with its k most cosine-similar bank features; neighbour j adds exp(s_j / T) to its
label's score (T = 0.1), and the highest score wins. This is the monitor of InstDisc, MoCo and DINO.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from fastclr.errors import UsageError


@torch.no_grad()
def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> Tensor:
    """Predicted labels [Q] for query features [Q, F] from bank features [M, F] with labels [M].

    Features need not be normalized (they are, here). k >= 1 is capped at M; temperature > 0.
    Memory: O(chunk * M).
    """
    if k < 1:
        raise UsageError(f"kNN k must be at least 1 neighbour, got {k}; recommended: 200")
    if not temperature > 0:
        raise UsageError(f"kNN temperature must be > 0, got {temperature}; recommended: 0.1")
    query = F.normalize(query.float(), dim=1)
    bank = F.normalize(bank.float(), dim=1)
    bank_labels = bank_labels.to(bank.device)
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, query.shape[0], chunk):
        sim = query[start : start + chunk] @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_top1(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy in percent of weighted kNN: the train split is the bank, test the queries."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(
        test_features,
        train_features,
        train_labels,
        num_classes=num_classes,
        k=k,
        temperature=temperature,
    )
    return 100.0 * (pred.cpu() == test_labels.cpu()).float().mean().item()
