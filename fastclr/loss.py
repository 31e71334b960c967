"""NTXentLoss: the nn.Module form of fastclr.ops.nt_xent (a one-line swap for lightly/solo-learn)."""

from torch import Tensor, nn

from fastclr.ops import nt_xent
from fastclr.ops.backends import check_name
from fastclr.ops.validation import check_reduction, check_temperature


class NTXentLoss(nn.Module):
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
        super().__init__()
        value, _ = check_temperature(temperature)
        check_reduction(reduction)
        check_name(backend)
        if isinstance(temperature, nn.Parameter):
            self.temperature = temperature
        elif isinstance(temperature, Tensor):
            self.register_buffer("temperature", temperature)
        else:
            self.temperature = value
        self.reduction, self.backend = reduction, backend
        self.gather_distributed = gather_distributed

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent(
            z1,
            z2,
            self.temperature,
            reduction=self.reduction,
            backend=self.backend,
            gather_distributed=self.gather_distributed,
        )

    def extra_repr(self) -> str:
        tau = self.temperature
        value = tau.detach().item() if isinstance(tau, Tensor) else tau
        learnable = ", learnable" if isinstance(tau, nn.Parameter) else ""
        return (
            f"temperature={value:g}{learnable}, reduction={self.reduction!r}, "
            f"backend={self.backend!r}"
        )
