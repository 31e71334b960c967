"""Loss operators: nt_xent and the rest of the contrastive family, with their backends; SwAV's
Sinkhorn codes and swapped-prediction loss."""

from fastclr.ops.clip_loss import clip_loss
from fastclr.ops.nt_xent import nt_xent
from fastclr.ops.sinkhorn import sinkhorn_knopp
from fastclr.ops.sup_con import sup_con
from fastclr.ops.swav_loss import swapped_prediction_loss

__all__ = ["clip_loss", "nt_xent", "sinkhorn_knopp", "sup_con", "swapped_prediction_loss"]
