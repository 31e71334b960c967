"""NTXentLoss: the nn.Module form of fastclr.ops.nt_xent (a one-line swap for lightly/solo-learn)."""

from torch import Tensor, nn

from fastclr.ops import nt_xent
from fastclr.ops.validation import check_reduction, check_temperature


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent loss. forward(z1 [N, D], z2 [N, D]) -> scalar (or [2N] with "none").

    See fastclr.ops.nt_xent for the arguments.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        *,
        reduction: str = "mean",
        backend: str = "auto",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        check_reduction(reduction)
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
        return f"temperature={self.temperature}, reduction={self.reduction!r}, backend={self.backend!r}"
