"""The registered backends' two primitives as torch.library custom ops, opaque to the compiler.

    fastclr::nt_xent_forward_rows(zr, zc, row_ids, inv_temp, backend)
        -> (lse [M], pos_logit [M], lse_neg [M])
    fastclr::nt_xent_backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp, backend)
        -> grad [M, D]

with the contract of fastclr/ops/chunked.py; `backend` names a module of the registry
(fastclr/ops/backends.py). torch.compile (dynamo, aot_autograd, inductor) sees each as one op whose
output shapes its fake implementation gives from the input shapes, symbolic ones included, so a
compiled loss survives a changing batch size; it never traces the row-block loops or the kernel
launches. torch.func.vmap runs an op once per batch element (a loop: rows of one loss are coupled).

The ops carry no autograd formula: the autograd Functions in fastclr/ops/function.py and
fastclr/ops/global_negatives.py call them in forward and in backward.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from fastclr.ops import backends
from fastclr.ops.chunked import accumulate_dtype


@torch.library.custom_op("fastclr::nt_xent_forward_rows", mutates_args=())
def forward_rows_op(
    zr: Tensor, zc: Tensor, row_ids: Tensor, inv_temp: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    return backends.BACKENDS[backend].load().forward_rows(zr, zc, row_ids, inv_temp)


@forward_rows_op.register_fake
def _(zr: Tensor, zc: Tensor, row_ids: Tensor, inv_temp: float, backend: str):
    acc = accumulate_dtype(zc.dtype)
    return tuple(zr.new_empty(zr.shape[0], dtype=acc) for _ in range(3))


@torch.library.custom_op("fastclr::nt_xent_backward_rows", mutates_args=())
def backward_rows_op(
    zr: Tensor,
    zc: Tensor,
    row_ids: Tensor,
    lse_c: Tensor,
    lse_neg_c: Tensor,
    g_c: Tensor,
    inv_temp: float,
    backend: str,
) -> Tensor:
    module = backends.BACKENDS[backend].load()
    return module.backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp)


@backward_rows_op.register_fake
def _(zr: Tensor, zc: Tensor, row_ids: Tensor, lse_c, lse_neg_c, g_c, inv_temp, backend: str):
    return zr.new_empty(zr.shape, dtype=accumulate_dtype(zc.dtype))


def _vmap_by_loop(op):
    """A vmap rule that calls `op` once per batch element and stacks the results along dim 0."""

    def rule(info, in_dims, *args):
        def element(i: int) -> list:
            return [a if d is None else a.select(d, i) for a, d in zip(args, in_dims, strict=True)]

        results = [op(*element(i)) for i in range(info.batch_size)]
        if isinstance(results[0], Tensor):
            return torch.stack(results), 0
        outputs = tuple(torch.stack(parts) for parts in zip(*results, strict=True))
        return outputs, (0,) * len(outputs)

    return rule


torch.library.register_vmap(forward_rows_op, _vmap_by_loop(forward_rows_op))
torch.library.register_vmap(backward_rows_op, _vmap_by_loop(backward_rows_op))


@dataclass(frozen=True)
class NamedPrimitives:
    """The primitives of a registered backend through the custom ops, with the chunked contract
    (forward_rows, backward_rows), for the autograd Functions."""

    name: str

    def forward_rows(self, zr: Tensor, zc: Tensor, row_ids: Tensor, inv_temp: float):
        return forward_rows_op(zr, zc, row_ids, inv_temp, self.name)

    def backward_rows(self, zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp: float) -> Tensor:
        return backward_rows_op(zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp, self.name)


# One object per backend, made at import: torch.compile then reads a constant from a dict.
NAMED = {name: NamedPrimitives(name) for name, b in backends.BACKENDS.items() if b.module}
