"""fastclr: fast, memory-efficient, verified SimCLR training."""

__version__ = "0.1.0"

from fastclr.loss import NTXentLoss
from fastclr.ops import nt_xent

__all__ = ["NTXentLoss", "__version__", "nt_xent"]
