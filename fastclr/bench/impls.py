"""The NT-Xent implementations measured side by side, their inputs, and the oracle they must match.

Every implementation is a callable loss(z1, z2) -> scalar mean NT-Xent loss over cat(z1, z2), the
SimCLR paper's L, so that one check and one timing loop serve all of them:

    reference, chunked, triton, cuda   fastclr.ops.nt_xent(..., backend=name) (the registry)
    reference-compiled                 torch.compile(nt_xent_reference), compiled per shape
    lightly                            lightly.loss.NTXentLoss(temperature, memory_bank_size=0)
    pytorch-metric-learning            pytorch_metric_learning.losses.NTXentLoss(temperature) on
                                       cat(z1, z2) with labels cat(arange(N), arange(N)): each row's
                                       only positive is the other view, every other row a negative

plus the matmul floor, which is no loss: the products any NT-Xent must compute (forward Z·Zᵀ;
backward recomputes Z·Zᵀ and multiplies the [C, C] weights by Z) timed through torch.matmul
(cuBLAS on GPU), the practical lower bound on the loss's time.
"""

import functools
import importlib.util
import types
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fastclr.ops import backends, chunked
from fastclr.ops.function import nt_xent_rows
from fastclr.ops.nt_xent import nt_xent
from fastclr.ops.reference import nt_xent_reference

LossFn = Callable[[Tensor, Tensor], Tensor]

MODES = ("fwd", "fwd+bwd")
COMPILED = "reference-compiled"
FLOOR = "matmul-floor"
PEER_MODULES = {"lightly": "lightly", "pytorch-metric-learning": "pytorch_metric_learning"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# SimCLR's temperature at large batch. Small tau makes the diagonal mask and the positive term
# weigh heavily in every row's softmax, so a kernel that gets either wrong fails the check.
TEMPERATURE = 0.1

# Relative error (value and gradient, against the oracle) an implementation may have before it is
# refused a timing. fp32 admits tf32 products (~3e-4). fp16/bf16 round the normalized rows (bf16:
# 2^-9 relative), which moves logits of up to 1/tau = 10 by ~1e-2: gradients err by about that much.
# A wrong kernel (a term missing, a mask misplaced) errs by far more. The bound is
# max(this, 2 x the reference's own error in the same dtype) where the reference fits.
TOLERANCE = {torch.float32: 2e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}
# Checked fp16 gradients are those of a scaled loss, as fp16 training scales it: unscaled, the
# mean loss's gradient at 2N = 65536 sits in fp16's subnormals (seen on an H200: every backend
# 1.8e-2 off, the plain PyTorch loss all zeros). The scale starts below GradScaler's 2^16 because
# the plain loss's value is itself fp16 (largest number 65504), and halves while the gradient
# overflows, as GradScaler's does (small 2N: gradients near 1).
GRAD_SCALE = {torch.float16: 2.0**15}


def loss_impl_names() -> list[str]:
    """fastclr's backends from the registry (new backends appear here by themselves), then the
    compiled reference."""
    return [*backends.BACKENDS, COMPILED]


def peer_impl_names() -> list[str]:
    return list(PEER_MODULES)


def unavailable_reason(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """None when `name` can run on tensors of this device and dtype, else why not."""
    if name in backends.BACKENDS:
        reason = backends.BACKENDS[name].unavailable_reason(device, dtype)
        if reason is None and name == "triton" and backends.interpreting_triton():
            return "TRITON_INTERPRET=1: interpreted kernels are checked in tests/, not timed"
        return reason
    if name in PEER_MODULES:
        module = PEER_MODULES[name]
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (optional: pip install 'fastclr[bench]')"
        return None
    if name in (COMPILED, FLOOR):
        return None
    raise ValueError(f"unknown implementation {name!r}")


def build_loss(name: str, temperature: float = TEMPERATURE) -> LossFn:
    """The mean NT-Xent loss of `name` as loss(z1, z2). The compiled reference is compiled afresh
    (torch._dynamo.reset()) so that no shape ever falls back to eager past the recompile limit."""
    if name in backends.BACKENDS:
        return functools.partial(nt_xent, temperature=temperature, backend=name)
    if name == COMPILED:
        torch._dynamo.reset()

        def reference_loss(z1: Tensor, z2: Tensor) -> Tensor:
            return nt_xent_reference(z1, z2, temperature)

        return torch.compile(reference_loss, dynamic=False)
    if name == "lightly":
        from lightly.loss import NTXentLoss

        return NTXentLoss(temperature=temperature, memory_bank_size=0)
    if name == "pytorch-metric-learning":
        from pytorch_metric_learning.losses import NTXentLoss

        module = NTXentLoss(temperature=temperature)

        def pml_loss(z1: Tensor, z2: Tensor) -> Tensor:
            labels = torch.arange(z1.shape[0], device=z1.device).repeat(2)
            return module(torch.cat([z1, z2]), labels)

        return pml_loss
    raise ValueError(f"{name!r} is not a loss implementation")


def case_seed(session_seed: int, rows: int, dim: int, dtype: torch.dtype) -> int:
    """Seed of one input set: fresh every session, the same for every implementation in it."""
    return zlib.crc32(f"{session_seed}-{rows}-{dim}-{dtype}".encode())


def make_projections(
    rows: int, dim: int, dtype: torch.dtype, device: torch.device, seed: int
) -> tuple[Tensor, Tensor]:
    """Two views' projections [rows // 2, dim] whose positives are correlated, as a trained SimCLR
    head's are (cosine ~0.9 at dim 128): random, never zeros, so that the positive term matters."""
    generator = torch.Generator(device=device).manual_seed(seed)
    z1 = torch.randn(rows // 2, dim, device=device, generator=generator)
    z2 = z1 + 0.5 * torch.randn(rows // 2, dim, device=device, generator=generator)
    return z1.to(dtype), z2.to(dtype)


def leaves(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    return z1.detach().requires_grad_(True), z2.detach().requires_grad_(True)


def value_and_grad(
    loss: LossFn, z1: Tensor, z2: Tensor, grad_scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """(loss value, gradient [rows, dim] w.r.t. cat(z1, z2)) under mean reduction.

    grad_scale: backpropagate this loss scale and divide it out in float64, halving it while the
    gradient overflows (down to 1), as fp16 training's torch.amp.GradScaler does (GRAD_SCALE)."""
    while True:
        a, b = leaves(z1, z2)
        value = loss(a, b)
        seed = torch.full_like(value, grad_scale)
        grad = torch.cat(torch.autograd.grad(value, (a, b), grad_outputs=seed))
        if grad_scale == 1.0:
            return value.detach(), grad
        if grad_scale < 2.0 or torch.isfinite(grad).all():
            return value.detach(), grad.double() / grad_scale
        grad_scale /= 2


def loss_step(loss: LossFn, z1: Tensor, z2: Tensor, mode: str) -> Callable[[], object]:
    """One timed call: the forward of a training step (inputs require grad, so the graph is built),
    or forward and backward. Returns whatever it computed so the caller may drop it."""
    a, b = leaves(z1, z2)
    if mode == "fwd":
        return lambda: loss(a, b)
    if mode == "fwd+bwd":
        return lambda: torch.autograd.grad(loss(a, b), (a, b))
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


@dataclass(frozen=True)
class FloorStep:
    """The matrix products of the loss on `rows` of Z, scaled to the full size by `scale`.

    Outputs are preallocated (matmul out=): the floor is the products' arithmetic, not allocation.
    When the [C, C] operands do not fit, the products of a block of rows against all C columns are
    timed and scaled by C / block: the same arithmetic at the same shapes' efficiency.
    """

    call: Callable[[], object]
    scale: float
    method: str


def floor_step(z: Tensor, mode: str, max_square_bytes: int) -> FloorStep:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rows = z.shape[0]
    block = rows
    while block > 1 and block * rows * z.element_size() * 2 > max_square_bytes:
        block //= 2
    head = z[:block]
    logits = torch.empty(block, rows, device=z.device, dtype=z.dtype)
    weights = torch.randn(block, rows, device=z.device, dtype=z.dtype)
    grad = torch.empty(block, z.shape[1], device=z.device, dtype=z.dtype)

    def forward() -> None:
        torch.matmul(head, z.T, out=logits)

    def forward_backward() -> None:
        torch.matmul(head, z.T, out=logits)  # forward
        torch.matmul(head, z.T, out=logits)  # backward recomputes the similarities
        torch.matmul(weights, z, out=grad)  # and multiplies the weights by Z

    call = forward if mode == "fwd" else forward_backward
    if block == rows:
        return FloorStep(call, 1.0, "full products")
    return FloorStep(call, rows / block, f"{block}-row block x {rows // block}")


def flops(rows: int, dim: int, mode: str) -> int:
    """Matrix-product FLOPs the loss cannot avoid: 2·C²·D forward, 6·C²·D forward+backward."""
    return (2 if mode == "fwd" else 6) * rows * rows * dim


def chunked_oracle_backend(block: int) -> types.SimpleNamespace:
    """The chunked primitives with a fixed (large) row block, for oracle runs at huge sizes."""
    return types.SimpleNamespace(
        forward_rows=functools.partial(chunked.forward_rows, block=block),
        backward_rows=functools.partial(chunked.backward_rows, block=block),
    )


def oracle(
    z1: Tensor, z2: Tensor, temperature: float, dense_limit: int, block_bytes: int
) -> tuple[Tensor, Tensor, str]:
    """(value, gradient, method) every implementation is checked against on these inputs.

    Up to `dense_limit` rows: the reference in float64. Beyond, the dense float64 matrix no longer
    fits, and the oracle is the chunked backend (itself checked against float64 in tests/) in fp32
    with row blocks of `block_bytes`.
    """
    rows = 2 * z1.shape[0]
    if rows <= dense_limit:
        value, grad = value_and_grad(
            lambda a, b: nt_xent_reference(a, b, temperature), z1.double(), z2.double()
        )
        return value, grad, "float64 reference"
    block = chunked.rows_per_block(rows, block_bytes)
    backend = chunked_oracle_backend(block)
    value, grad = value_and_grad(
        lambda a, b: nt_xent_rows(a, b, temperature, backend).mean(), z1.float(), z2.float()
    )
    return value.double(), grad.double(), "chunked fp32"


def relative_error(value: Tensor, reference: Tensor) -> float:
    """‖value − reference‖ / ‖reference‖ in float64; inf when value has NaN or Inf."""
    value, reference = value.double(), reference.double()
    if not torch.isfinite(value).all():
        return float("inf")
    return (
        torch.linalg.vector_norm(value - reference) / torch.linalg.vector_norm(reference)
    ).item()


def estimated_bytes(name: str, rows: int, dim: int) -> int:
    """A generous estimate of an implementation's peak extra memory (fp32), to skip sizes that
    could not fit on a CPU before trying them (an out-of-memory kill takes the whole run down)."""
    square = rows * rows * 4
    if name in ("reference", COMPILED, "lightly"):
        return 6 * square
    if name == "pytorch-metric-learning":  # [pairs, negative pairs] masks: C x C(C-2) elements
        return 6 * square * rows
    if name == FLOOR:
        return 3 * square
    if name == "chunked":
        return 3 * 4 * rows * min(rows, chunked.rows_per_block(rows)) + 16 * rows * dim * 4
    return 16 * rows * dim * 4
