"""The one torch.autograd.Function behind every memory-efficient backend.

A backend supplies two primitives (see fastclr/ops/chunked.py for their contract): `forward_rows`
(per-row log-sum-exp, positive logit and negatives-only log-sum-exp) and `backward_rows` (the
gradient of the normalized rows, recomputing similarity tiles from the saved log-sum-exps). This
Function saves only the normalized rows [C, D] and the two [C] log-sum-exps: never a C x C tensor.
The loss is softplus(lse_neg - pos_logit) (chunked.loss_terms), accurate where lse - pos_logit would
cancel. The registered backends reach it as
torch.library custom ops (fastclr/ops/primitives.py), so torch.compile and torch.func see opaque ops.

Normalization stays outside the Function, in plain autograd (F.normalize in fp32), so every backend
shares one well-tested normalization backward and its eps behaviour for zero rows.

Temperature gradient. The loss depends on tau only through the logits <ẑ_i, ẑ_k> / tau, which are
homogeneous of degree 2 in the rows: L(a·Ẑ, tau) = L(Ẑ, tau / a²). Differentiating at a = 1,

    sum_i <ẑ_i, dL/dẑ_i> = -2 tau dL/dtau,   so   dL/dtau = -(1 / (2 tau)) sum_i <ẑ_i, dL/dẑ_i>

with dL/dẑ_i the full gradient (row and column roles, positive logit included) that backward_rows
already returns: O(C·D) extra work, no extra kernel. Over ranks (global negatives) the sum runs over
every rank's rows, each rank adding its own.

The backends' backward is first-order only: a double backward raises a UsageError that says so.
"""

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from fastclr.errors import UsageError
from fastclr.ops.chunked import loss_terms


class Primitives(Protocol):
    """A backend's two primitives with the contract of fastclr/ops/chunked.py: a backend module
    itself, or fastclr.ops.primitives.NAMED[name] (the same through custom ops)."""

    def forward_rows(
        self, zr: Tensor, zc: Tensor, row_ids: Tensor, inv_temp: float
    ) -> tuple[Tensor, Tensor, Tensor]: ...

    def backward_rows(
        self,
        zr: Tensor,
        zc: Tensor,
        row_ids: Tensor,
        lse_c: Tensor,
        lse_neg_c: Tensor,
        g_c: Tensor,
        inv_temp: float,
    ) -> Tensor: ...


def backend_name(backend: Primitives) -> str:
    """The name of a primitives object for messages: registered name, else module name."""
    return getattr(backend, "name", getattr(backend, "__name__", type(backend).__name__))


class BackwardRows(torch.autograd.Function):
    """backend.backward_rows as an autograd node that refuses to be differentiated again.

    In a plain backward it is a call. Under create_graph=True or torch.func it keeps the gradient
    attached to the graph, so a second-order derivative reaches this node and gets a clear error
    instead of tracing the primitives' in-place ops (or silently missing their terms).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp: float, backend: Primitives
    ) -> Tensor:
        return backend.backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.backend_name = backend_name(inputs[-1])

    @staticmethod
    def backward(ctx, grad: Tensor):
        raise UsageError(
            f"nt_xent backend {ctx.backend_name!r} is once-differentiable; use "
            "backend='reference' for higher-order gradients"
        )


def temperature_grad(z_hat: Tensor, grad: Tensor, inv_temp: float, temperature: Tensor) -> Tensor:
    """dL/dtau = -(1/(2 tau)) sum_i <ẑ_i, dL/dẑ_i> (module docstring), in tau's dtype and device.

    Args:
        z_hat: [M, D] normalized rows; grad: [M, D] dL/dz_hat in the accumulation dtype.
    """
    rows_dot_grad = (z_hat.to(grad.dtype) * grad).sum()
    return (rows_dot_grad * (-0.5 * inv_temp)).to(temperature.device, temperature.dtype)


class NTXentRows(torch.autograd.Function):
    """Per-row NT-Xent losses of already-normalized rows: z_hat [C, D] -> ([C] losses, [C] lse,
    [C] lse_neg).

    The two log-sum-exp outputs are saved for backward and get no gradient. `temperature` is None, or the 0-dim
    tensor tau (value 1 / inv_temp) that receives dL/dtau.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        z_hat: Tensor, temperature: Tensor | None, inv_temp: float, backend: Primitives
    ) -> tuple[Tensor, Tensor, Tensor]:
        row_ids = torch.arange(z_hat.shape[0], device=z_hat.device)
        lse, pos_logit, lse_neg = backend.forward_rows(z_hat, z_hat, row_ids, inv_temp)
        return loss_terms(lse_neg, pos_logit), lse, lse_neg

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        z_hat, temperature, inv_temp, backend = inputs
        ctx.save_for_backward(z_hat, output[1], output[2], temperature)
        ctx.inv_temp, ctx.backend = inv_temp, backend
        ctx.mark_non_differentiable(output[1], output[2])

    @staticmethod
    def backward(ctx, grad_rows: Tensor, _grad_lse: Tensor, _grad_lse_neg: Tensor):
        z_hat, lse, lse_neg, temperature = ctx.saved_tensors
        row_ids = torch.arange(z_hat.shape[0], device=z_hat.device)
        g = grad_rows.to(lse.dtype)
        grad = BackwardRows.apply(z_hat, z_hat, row_ids, lse, lse_neg, g, ctx.inv_temp, ctx.backend)
        grad_tau = None
        if ctx.needs_input_grad[1]:
            grad_tau = temperature_grad(z_hat, grad, ctx.inv_temp, temperature)
        return grad.to(z_hat.dtype), grad_tau, None, None


def normalized_rows(z1: Tensor, z2: Tensor) -> Tensor:
    """cat(z1, z2) L2-normalized in fp32 (fp64 stays fp64), then cast to the compute dtype.

    Returns [2N, D] in the inputs' dtype: fp16/bf16 tiles feed tensor cores, fp32 accumulates.
    Zero rows normalize to zero (F.normalize's eps), never NaN.
    """
    z = torch.cat([z1, z2], dim=0)
    work = torch.float64 if z.dtype == torch.float64 else torch.float32
    return F.normalize(z.to(work), dim=1).to(z.dtype)


def nt_xent_rows(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    backend: Primitives,
    *,
    temperature_tensor: Tensor | None = None,
) -> Tensor:
    """The 2N per-row losses through a memory-efficient backend; differentiable in z1 and z2.

    Args:
        z1, z2: [N, D] projections. temperature: tau's value, a float > 0.
        backend: the primitives (see Primitives).
        temperature_tensor: the 0-dim tensor holding tau when it requires grad (it gets dL/dtau).
    """
    rows, _, _ = NTXentRows.apply(
        normalized_rows(z1, z2), temperature_tensor, 1.0 / temperature, backend
    )
    return rows


def reduce_rows(rows: Tensor, reduction: str) -> Tensor:
    """Per-row losses [C] -> their mean or sum (scalars), or themselves for "none"."""
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    return rows
