"""Evaluation of a frozen backbone: weighted kNN and a linear probe, top-1 accuracy."""

from fastclr.eval.features import extract_features
from fastclr.eval.knn import knn_predict, knn_top1
from fastclr.eval.linear import linear_probe_top1

__all__ = ["extract_features", "knn_predict", "knn_top1", "linear_probe_top1"]
