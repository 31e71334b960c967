"""Loss operators: nt_xent and the rest of the contrastive family, with their backends."""

from fastclr.ops.clip_loss import clip_loss
from fastclr.ops.nt_xent import nt_xent
from fastclr.ops.sup_con import sup_con

__all__ = ["clip_loss", "nt_xent", "sup_con"]
