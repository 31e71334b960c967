"""Triton backend: launchers for the fused NT-Xent kernels in fastclr.kernels.

Implements the two primitives of the backend contract (see fastclr/ops/chunked.py, the spec it
mirrors): `forward_rows` (per-row masked log-sum-exp, positive logit and negatives-only log-sum-exp)
and `backward_rows` (the gradient of the normalized rows, recomputing similarity tiles from the saved
log-sum-exps). Each
launcher checks shapes, allocates its outputs, and launches one autotuned kernel over row blocks.

Memory: the outputs (3·M fp32 in forward, M·D fp32 in backward); nothing of C x C elements.

Triton is imported lazily inside the launchers, so `import fastclr` works without it and nothing
touches the GPU at import time. Under TRITON_INTERPRET=1 the kernels run on CPU tensors through the
Triton interpreter (slow; used by the CPU tests).
"""

import contextlib

import torch
from torch import Tensor

from fastclr.ops import chunked
from fastclr.ops.backends import interpreting_triton

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Above this inverse temperature exp(s - inv_temp) can underflow fp32 for anti-aligned rows, so the
# backward falls back from one shared exponential per element to two (see kernels/nt_xent_backward.py).
SHARED_EXP_MAX_INV_TEMP = 30.0


def availability(device: torch.device, dtype: torch.dtype) -> str | None:
    """None if the triton backend can run on (device, dtype), else the reason it cannot."""
    if dtype not in SUPPORTED_DTYPES:
        return f"{dtype} is not supported by the triton backend (fp32, fp16, bf16; use 'chunked')"
    if device.type == "cpu" and not interpreting_triton():
        return "needs a CUDA tensor (or TRITON_INTERPRET=1 to run the kernels on CPU, slowly)"
    if device.type not in ("cuda", "cpu"):
        return "needs a CUDA tensor"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


def _check_rows(zr: Tensor, zc: Tensor, row_ids: Tensor) -> None:
    if zr.dim() != 2 or zc.dim() != 2:
        raise ValueError(
            f"zr and zc must be 2-D, got zr {tuple(zr.shape)} and zc {tuple(zc.shape)}"
        )
    if zr.shape[1] != zc.shape[1] or zc.shape[1] < 1:
        raise ValueError(
            f"zr {tuple(zr.shape)} and zc {tuple(zc.shape)} need the same feature count D >= 1"
        )
    if zc.shape[0] < 2 or zc.shape[0] % 2:
        raise ValueError(f"zc must hold an even number C >= 2 of rows, got {zc.shape[0]}")
    if zc.shape[0] >= 2**31:
        # The kernels' self/positive masks compare int32 column indices (offsets stay int64).
        raise ValueError(f"zc must hold fewer than 2^31 rows, got {zc.shape[0]}")
    if zr.dtype != zc.dtype or zr.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"zr and zc must share one of fp32/fp16/bf16, got {zr.dtype} and {zc.dtype} "
            "(fp64: use backend='chunked')"
        )
    if row_ids.shape != (zr.shape[0],) or row_ids.dtype != torch.int64:
        raise ValueError(
            f"row_ids must be int64 of shape [{zr.shape[0]}], got {row_ids.dtype} "
            f"{tuple(row_ids.shape)}"
        )
    if not (zr.device == zc.device == row_ids.device):
        raise ValueError(
            f"zr, zc and row_ids must be on one device, got {zr.device}, {zc.device}, "
            f"{row_ids.device}"
        )


def _operands(zr: Tensor, zc: Tensor) -> tuple[Tensor, Tensor]:
    """The tensors the kernels read. Under the interpreter bf16 is upcast to fp32: the interpreter's
    bf16 tl.dot returns wrong numbers (triton-lang/triton#11584); on a GPU bf16 goes in as is."""
    if interpreting_triton() and zc.dtype == torch.bfloat16:
        return zr.float(), zc.float()
    return zr, zc


def _dot_precision(dtype: torch.dtype) -> str:
    """fp32 operands follow torch's own matmul setting: TF32 only where torch allows it
    (torch.backends.cuda.matmul.allow_tf32 / set_float32_matmul_precision), otherwise tf32x3,
    three TF32 products whose error is close to fp32's. Ignored for fp16/bf16 operands."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "tf32x3"
    return "tf32"


def _device_guard(device: torch.device):
    # Triton launches on the current CUDA device; make it the tensors' device.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def forward_rows(
    zr: Tensor, zc: Tensor, row_ids: Tensor, inv_temp: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row masked log-sum-exps and positive logit.

    Args:
        zr: [M, D] normalized rows to compute (fp32/fp16/bf16; any strides).
        zc: [C, D] all normalized columns, same dtype and device; C even.
        row_ids: [M] int64, zr[i] == zc[row_ids[i]].
        inv_temp: 1 / temperature.

    Returns:
        lse: [M] fp32, log sum_{k != row_ids[i]} exp(inv_temp <zr_i, zc_k>).
        pos_logit: [M] fp32, inv_temp <zr_i, zc[(row_ids[i] + C/2) % C]>.
        lse_neg: [M] fp32, lse without the positive column (-inf when C = 2).
    """
    import triton

    from fastclr.kernels import configs
    from fastclr.kernels.nt_xent_forward import nt_xent_forward_kernel

    _check_rows(zr, zc, row_ids)
    zr_k, zc_k = _operands(zr, zc)
    num_rows, num_features = zr.shape
    num_cols = zc.shape[0]
    lse = torch.empty(num_rows, dtype=torch.float32, device=zr.device)
    pos_logit = torch.empty(num_rows, dtype=torch.float32, device=zr.device)
    lse_neg = torch.empty(num_rows, dtype=torch.float32, device=zr.device)
    if num_rows == 0:
        return lse, pos_logit, lse_neg
    block_d, single_d = configs.feature_block(num_features, zc_k.element_size())

    def grid(meta):
        return (triton.cdiv(num_rows, meta["BLOCK_M"]),)

    with _device_guard(zr.device):
        nt_xent_forward_kernel[grid](
            zr_k,
            zc_k,
            row_ids.contiguous(),
            lse,
            pos_logit,
            lse_neg,
            num_rows,
            num_cols,
            num_features,
            zr_k.stride(0),
            zr_k.stride(1),
            zc_k.stride(0),
            zc_k.stride(1),
            float(inv_temp),
            BLOCK_D=block_d,
            SINGLE_D=single_d,
            DOT_PRECISION=_dot_precision(zc_k.dtype),
        )
    return lse, pos_logit, lse_neg


def backward_rows(
    zr: Tensor,
    zc: Tensor,
    row_ids: Tensor,
    lse_c: Tensor,
    lse_neg_c: Tensor,
    g_c: Tensor,
    inv_temp: float,
) -> Tensor:
    """Gradient of sum_j g_j loss_j with respect to the normalized rows zr.

    Args:
        zr, zc, row_ids, inv_temp: as in forward_rows.
        lse_c: [C] fp32 log-sum-exp of every global row (from forward_rows over all rows).
        lse_neg_c: [C] fp32 its negatives-only log-sum-exp (forward_rows' third output).
        g_c: [C] fp32 upstream gradient of every global row's loss.

    Returns:
        [M, D] fp32 gradient.
    """
    import triton

    from fastclr.kernels import configs
    from fastclr.kernels.nt_xent_backward import nt_xent_backward_kernel

    _check_rows(zr, zc, row_ids)
    num_cols = zc.shape[0]
    for name, vec in (("lse_c", lse_c), ("lse_neg_c", lse_neg_c), ("g_c", g_c)):
        if vec.shape != (num_cols,) or vec.device != zc.device:
            raise ValueError(
                f"{name} must have shape [{num_cols}] on {zc.device}, got {tuple(vec.shape)} "
                f"on {vec.device}"
            )
    zr_k, zc_k = _operands(zr, zc)
    lse_c = lse_c.to(torch.float32).contiguous()
    lse_neg_c = lse_neg_c.to(torch.float32).contiguous()
    g_c = g_c.to(torch.float32).contiguous()
    num_rows, num_features = zr.shape
    grad = torch.empty(num_rows, num_features, dtype=torch.float32, device=zr.device)
    if num_rows == 0:
        return grad
    block_d, single_d = configs.feature_block(num_features, zc_k.element_size())
    shared_exp = float(inv_temp) <= SHARED_EXP_MAX_INV_TEMP
    scale_weights = zc_k.dtype == torch.float16
    # Per-column factor of the shared exponential, b_k = g_k exp(inv_temp - lse_k), computed once
    # here instead of by every program on every tile (fp16 and the two-exponential path: unused).
    precompute = shared_exp and not scale_weights
    col_w = g_c * torch.exp(float(inv_temp) - lse_c) if precompute else g_c
    # q_k = g_k Q_k, Q = 1 - P(pos) = exp(lse_neg - lse): the positive column's weight is
    # -(q_row + q_pos), free of the cancellation of g P(pos) - g (fastclr/ops/chunked.py).
    q_c = g_c * chunked.negative_mass(lse_c, lse_neg_c)
    # fp16 weights are scaled per row by max|g| (a [1] tensor: no host sync).
    g_max = g_c.abs().amax().reshape(1) if scale_weights else g_c

    def grid(meta):
        return (triton.cdiv(num_rows, meta["BLOCK_M"]), triton.cdiv(num_features, block_d))

    with _device_guard(zr.device):
        nt_xent_backward_kernel[grid](
            zr_k,
            zc_k,
            row_ids.contiguous(),
            lse_c,
            g_c,
            q_c,
            col_w,
            g_max,
            grad,
            num_rows,
            num_cols,
            num_features,
            zr_k.stride(0),
            zr_k.stride(1),
            zc_k.stride(0),
            zc_k.stride(1),
            grad.stride(0),
            grad.stride(1),
            float(inv_temp),
            BLOCK_D=block_d,
            SINGLE_D=single_d,
            SHARED_EXP=shared_exp,
            SCALE_WEIGHTS=scale_weights,
            DOT_PRECISION=_dot_precision(zc_k.dtype),
        )
    return grad
