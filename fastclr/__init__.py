"""fastclr: fast, memory-efficient, verified SimCLR training."""

__version__ = "0.1.0"

from fastclr.loss import ClipLoss, DCLLoss, DCLWLoss, NTXentLoss, SupConLoss
from fastclr.ops import clip_loss, nt_xent, sup_con

__all__ = [
    "ClipLoss",
    "DCLLoss",
    "DCLWLoss",
    "NTXentLoss",
    "SupConLoss",
    "__version__",
    "clip_loss",
    "nt_xent",
    "sup_con",
]
