"""The nn.Module forms of the loss family, with the peers' call shapes: NTXentLoss (lightly,
solo-learn), DCLLoss / DCLWLoss (lightly), SupConLoss (the SupCon authors, PML) and ClipLoss
(OpenCLIP). Each forward is one call of the fastclr.ops function it names."""

import torch
from torch import Tensor, nn

from fastclr.ops import clip_loss, nt_xent, sup_con
from fastclr.ops.backends import check_name
from fastclr.ops.family_validation import check_dcl_sigma
from fastclr.ops.global_negatives import distributed_world_size
from fastclr.ops.validation import check_reduction, check_temperature


def hold_temperature(module: nn.Module, temperature: float | Tensor) -> None:
    """Set module.temperature: an nn.Parameter stays a parameter (learnable, true gradient), a
    plain tensor becomes a buffer (follows .to() and the state_dict), a number a float."""
    value, _ = check_temperature(temperature)
    if isinstance(temperature, nn.Parameter):
        module.temperature = temperature
    elif isinstance(temperature, Tensor):
        module.register_buffer("temperature", temperature)
    else:
        module.temperature = value


def distributed_rank() -> int:
    """This process's rank when torch.distributed runs more than one, else 0."""
    return torch.distributed.get_rank() if distributed_world_size() > 1 else 0


def temperature_repr(tau: float | Tensor) -> str:
    value = tau.detach().item() if isinstance(tau, Tensor) else tau
    learnable = ", learnable" if isinstance(tau, nn.Parameter) else ""
    return f"temperature={value:g}{learnable}"


class TemperatureLoss(nn.Module):
    """What every temperature-scaled loss module here holds and checks at construction: the
    temperature (see hold_temperature), the reduction, the backend name and whether negatives span
    the ranks."""

    def __init__(
        self,
        temperature: float | Tensor,
        *,
        reduction: str,
        backend: str,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        hold_temperature(self, temperature)
        check_reduction(reduction)
        check_name(backend)
        self.reduction, self.backend = reduction, backend
        self.gather_distributed = gather_distributed


class NTXentLoss(TemperatureLoss):
    """SimCLR's NT-Xent loss. forward(z1 [N, D], z2 [N, D]) -> scalar (or [2N] with "none").

    See fastclr.ops.nt_xent for the arguments. A temperature given as an nn.Parameter is registered
    as this module's parameter (optimizers over .parameters() learn it, with its true gradient), a
    plain tensor as a buffer (it follows .to() and the state_dict), a number stays a float. Every
    argument is checked here, at construction; the temperature's value again at every call (a
    learnable one may leave (0, inf)).
    """

    def __init__(
        self,
        temperature: float | Tensor = 0.5,
        *,
        reduction: str = "mean",
        backend: str = "auto",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(
            temperature, reduction=reduction, backend=backend, gather_distributed=gather_distributed
        )

    def forward(self, z1: Tensor, z2: Tensor, negatives: Tensor | None = None) -> Tensor:
        """negatives: an optional [K, D] detached queue of extra negatives (MoCo v2 style)."""
        return nt_xent(
            z1,
            z2,
            self.temperature,
            reduction=self.reduction,
            backend=self.backend,
            gather_distributed=self.gather_distributed,
            negatives=negatives,
        )

    def extra_repr(self) -> str:
        return (
            f"{temperature_repr(self.temperature)}, reduction={self.reduction!r}, "
            f"backend={self.backend!r}"
        )


class DCLLoss(TemperatureLoss):
    """Decoupled contrastive loss (lightly's DCLLoss): forward(out0 [N, D], out1 [N, D]) -> scalar.

    nt_xent(out0, out1, temperature, decoupled=True); with weight_sigma, DCLW's positive weights.
    """

    def __init__(
        self,
        temperature: float | Tensor = 0.1,
        *,
        weight_sigma: float | None = None,
        reduction: str = "mean",
        backend: str = "auto",
    ) -> None:
        super().__init__(temperature, reduction=reduction, backend=backend)
        check_dcl_sigma(weight_sigma, decoupled=True)
        self.weight_sigma = weight_sigma

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        return nt_xent(
            out0,
            out1,
            self.temperature,
            reduction=self.reduction,
            backend=self.backend,
            decoupled=True,
            dcl_weight_sigma=self.weight_sigma,
        )

    def extra_repr(self) -> str:
        sigma = "" if self.weight_sigma is None else f", weight_sigma={self.weight_sigma:g}"
        return f"{temperature_repr(self.temperature)}{sigma}, reduction={self.reduction!r}"


class DCLWLoss(DCLLoss):
    """DCL with von Mises-Fisher positive weights (lightly's DCLWLoss; sigma 0.5 by default)."""

    def __init__(
        self,
        temperature: float | Tensor = 0.1,
        sigma: float = 0.5,
        *,
        reduction: str = "mean",
        backend: str = "auto",
    ) -> None:
        super().__init__(temperature, weight_sigma=sigma, reduction=reduction, backend=backend)


class SupConLoss(TemperatureLoss):
    """Supervised contrastive loss: forward(features [B, V, D] or [M, D], labels [B] / [M]).

    The SupCon authors' call shape, L_out with contrast_mode="all" (every view an anchor); their
    base_temperature factor tau / base_tau is 1 at their defaults and is not applied. labels=None
    is multi-view SimCLR (labels = sample index), their unsupervised mode. See fastclr.ops.sup_con.
    """

    def __init__(
        self,
        temperature: float | Tensor = 0.1,
        *,
        reduction: str = "mean",
        backend: str = "auto",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(
            temperature, reduction=reduction, backend=backend, gather_distributed=gather_distributed
        )

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None and isinstance(features, Tensor):
            # Sample ids, unique across ranks when the rows are gathered.
            offset = features.shape[0] * distributed_rank() if self.gather_distributed else 0
            labels = torch.arange(features.shape[0], device=features.device) + offset
        return sup_con(
            features,
            labels,
            self.temperature,
            reduction=self.reduction,
            backend=self.backend,
            gather_distributed=self.gather_distributed,
        )

    def extra_repr(self) -> str:
        return f"{temperature_repr(self.temperature)}, reduction={self.reduction!r}"


class ClipLoss(nn.Module):
    """CLIP's loss with OpenCLIP's call shape: forward(image_features [N, D], text_features [N, D],
    logit_scale) -> scalar, logit_scale the exponentiated scale (model.logit_scale.exp()), which
    gets its gradient. See fastclr.ops.clip_loss."""

    def __init__(self, *, reduction: str = "mean", backend: str = "auto") -> None:
        super().__init__()
        check_reduction(reduction)
        check_name(backend)
        self.reduction, self.backend = reduction, backend

    def forward(
        self, image_features: Tensor, text_features: Tensor, logit_scale: float | Tensor
    ) -> Tensor:
        return clip_loss(
            image_features,
            text_features,
            logit_scale,
            reduction=self.reduction,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
