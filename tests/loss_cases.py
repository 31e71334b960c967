"""Helpers shared by the loss tests: backends usable here and float64 reference comparisons."""

import torch
import torch.nn.functional as F
from torch import Tensor

from fastclr.ops.backends import BACKENDS
from fastclr.ops.reference import nt_xent_reference


def usable_backends(device: torch.device, dtype: torch.dtype) -> list[str]:
    return [n for n, b in BACKENDS.items() if b.unavailable_reason(device, dtype) is None]


def reference_value_and_grads(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, upstream: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row losses and d(sum upstream * losses)/d(z1, z2) in float64."""
    a = z1.detach().double().requires_grad_()
    b = z2.detach().double().requires_grad_()
    rows = nt_xent_reference(a, b, temperature, reduction="none")
    ga, gb = torch.autograd.grad((rows * upstream.double()).sum(), [a, b])
    return rows.detach(), ga, gb


def reference_temperature_grads(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, upstream: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row losses and d(sum upstream * losses)/d(z1, z2, tau) in float64, tau a tensor leaf."""
    a = z1.detach().double().requires_grad_()
    b = z2.detach().double().requires_grad_()
    tau = torch.tensor(float(temperature), dtype=torch.float64, requires_grad=True)
    rows = nt_xent_reference(a, b, tau, reduction="none")
    ga, gb, gtau = torch.autograd.grad((rows * upstream.double()).sum(), [a, b, tau])
    return rows.detach(), ga, gb, gtau


def assert_at_most_twice_torchs_error(
    mine: torch.Tensor, torchs: torch.Tensor, exact: torch.Tensor, dtype: torch.dtype
) -> None:
    """flash-attention's rule for low precision: at most 2x as wrong as PyTorch in the same dtype.

    Plus one rounding of the result to `dtype`: gradients are returned in the inputs' dtype, and on
    tiny inputs PyTorch's own error can be zero by luck.
    """
    my_err = (mine.double() - exact).abs().max().item()
    torch_err = (torchs.double() - exact).abs().max().item()
    one_rounding = torch.finfo(dtype).eps * exact.abs().max().item()
    assert my_err <= 2 * torch_err + one_rounding + 1e-6, (my_err, torch_err, one_rounding)


# float64 O(N^2) oracles of the loss family, written from the papers' formulas (not from the
# library's code), for the tests of sup_con, nt_xent(negatives=, decoupled=) and clip_loss.


def sup_con_oracle(z: Tensor, labels: Tensor, tau: Tensor | float) -> tuple[Tensor, Tensor]:
    """Khosla et al. 2020 eq. 2 (L_out): per-anchor losses [M] (0 without positives) and the
    has-positive mask. z [M, D] unnormalized."""
    zh = F.normalize(z.double(), dim=1)
    m = zh.shape[0]
    eye = torch.eye(m, dtype=torch.bool)
    sim = (zh @ zh.T / tau).masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    count = positive.sum(1)
    summed = torch.where(positive, log_prob, 0.0).sum(1)
    losses = torch.where(count > 0, -summed / count.clamp(min=1), 0.0)
    return losses, count > 0


def nt_xent_queue_oracle(
    z1: Tensor,
    z2: Tensor,
    queue: Tensor | None,
    tau: Tensor | float,
    decoupled: bool = False,
    weights: Tensor | None = None,
) -> Tensor:
    """Per-row [2N] losses -w_i s_ip + log sum_{k in N(i)} exp(s_ik), N(i) = every other row of
    cat(z1, z2) and the queue (decoupled: also not p); w = 1 unless given (DCLW)."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    c = z.shape[0]
    columns = z if queue is None else torch.cat([z, F.normalize(queue.double(), dim=1)])
    sim = z @ columns.T / tau
    positive_index = (torch.arange(c) + c // 2) % c
    pos_logit = sim[torch.arange(c), positive_index]
    excluded = torch.zeros_like(sim, dtype=torch.bool)
    excluded[torch.arange(c), torch.arange(c)] = True
    if decoupled:
        excluded[torch.arange(c), positive_index] = True
    lse = torch.logsumexp(sim.masked_fill(excluded, float("-inf")), dim=1)
    w = torch.ones(c, dtype=torch.float64) if weights is None else weights
    return lse - w * pos_logit


def dclw_weights(z1: Tensor, z2: Tensor, sigma: float) -> Tensor:
    """Yeh et al. 2022 (DCLW): w = 2 - N softmax(<ẑ1_k, ẑ2_k> / sigma), both views, detached."""
    a = F.normalize(z1.detach().double(), dim=1)
    b = F.normalize(z2.detach().double(), dim=1)
    w = 2 - a.shape[0] * torch.softmax((a * b).sum(1) / sigma, dim=0)
    return w.repeat(2)


def clip_oracle(a: Tensor, b: Tensor, scale: Tensor | float) -> Tensor:
    """Radford et al. 2021 / OpenCLIP ClipLoss: [2, N] row and column cross-entropies of
    scale * a bᵀ with targets on the diagonal."""
    logits = scale * a.double() @ b.double().T
    target = torch.arange(a.shape[0])
    return torch.stack(
        [
            F.cross_entropy(logits, target, reduction="none"),
            F.cross_entropy(logits.T, target, reduction="none"),
        ]
    )
