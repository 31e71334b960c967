"""Weighted kNN (InstDisc voting) against a direct implementation; the linear probe separates."""

import torch
import torch.nn.functional as F

from fastclr.eval import knn_predict, knn_top1, linear_probe_top1


def knn_direct(query, bank, labels, num_classes, k, temperature):
    """One query at a time, sorting the full similarity row."""
    out = []
    for q in F.normalize(query, dim=1):
        sim = F.normalize(bank, dim=1) @ q
        order = sim.argsort(descending=True)[:k]
        scores = torch.zeros(num_classes)
        for j in order:
            scores[labels[j]] += torch.exp(sim[j] / temperature)
        out.append(scores.argmax())
    return torch.stack(out)


def test_knn_matches_direct_voting():
    seed = torch.seed()
    print("seed", seed)
    bank, labels = torch.randn(97, 5), torch.randint(0, 4, (97,))
    query = torch.randn(33, 5)
    for k in (1, 7, 200):  # 200 > bank size: capped
        got = knn_predict(query, bank, labels, num_classes=4, k=k, temperature=0.1, chunk=10)
        expected = knn_direct(query, bank, labels, 4, min(k, 97), 0.1)
        assert torch.equal(got, expected)


def test_knn_and_linear_probe_on_separable_features():
    centers = torch.randn(3, 16) * 5
    labels = torch.arange(3).repeat(40)
    test_labels = torch.arange(3).repeat(10)
    train_x = centers[labels] + torch.randn(120, 16)
    test_x = centers[test_labels] + torch.randn(30, 16)
    assert knn_top1(train_x, labels, test_x, test_labels, k=10) == 100.0
    assert linear_probe_top1(train_x, labels, test_x, test_labels, epochs=100) == 100.0
    shuffled = test_labels[torch.randperm(30)]
    assert knn_top1(train_x, labels, test_x, shuffled, k=10) < 100.0
