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

from fastclr.ops.backends import interpreting_triton

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Above this inverse temperature exp(s - inv_temp) can underflow fp32 for anti-aligned rows, so the
# backward falls back from one shared exponential per element to two (see kernels/nt_xent_backward.py).
SHARED_EXP_MAX_INV_TEMP = 30.0
# Up to this inverse temperature the forward shifts the logits by the static bound inv_temp instead of
# a running max: every term exp(s - inv_temp) >= e^-60 stays a normal fp32 (kernels/nt_xent_forward.py).
STATIC_SHIFT_MAX_INV_TEMP = 30.0


# From this many features on the backward writes the weights of a slab of rows and multiplies them by
# zc in one matmul (kernels/nt_xent_weights.py) instead of recomputing every score tile per output
# slice: 4·M·C·D tensor flops instead of (D / 64 + 1)·2·M·C·D.
SLAB_MIN_FEATURES = 512
SLAB_MIN_ROWS = 256  # a slab has max(D, this) rows: W [rows, C] is about the size of zc [C, D]


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


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 operands follow torch's own matmul setting: TF32 only where torch allows it
    (torch.backends.cuda.matmul.allow_tf32 / set_float32_matmul_precision), otherwise tf32x3,
    three TF32 products whose error is close to fp32's. Ignored for fp16/bf16 operands."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "tf32x3"
    return "tf32"


def _split_masks(device: torch.device, operand: Tensor, dot_precision: str, block_d: int) -> bool:
    """The tile schedule for this GPU (kernels/configs.py split_masks); the interpreter splits."""
    from fastclr.kernels import configs

    cc = None
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        cc = 10 * major + minor
    return configs.split_masks(cc, operand.element_size(), dot_precision, block_d)


def _column_splits(device: torch.device, rows: int, cols: int) -> int:
    """Programs per row block (kernels/configs.py column_splits) for this GPU's SM count."""
    from fastclr.kernels import configs

    sms = None
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
    return configs.column_splits(rows, cols, sms)


def device_guard(device: torch.device):
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
    precision = dot_precision(zc_k.dtype)

    splits = _column_splits(zr.device, num_rows, num_cols)
    # Each column split writes its partial negatives-only log-sum-exp; one split writes lse_neg.
    lse_parts = torch.empty(splits, num_rows, dtype=torch.float32, device=zr.device)
    if splits == 1:
        lse_parts = lse_neg.view(1, num_rows)

    def grid(meta):
        return (triton.cdiv(num_rows, meta["BLOCK_M"]), splits)

    with device_guard(zr.device):
        nt_xent_forward_kernel[grid](
            zr_k,
            zc_k,
            row_ids.contiguous(),
            lse_parts,
            pos_logit,
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
            STATIC_SHIFT=float(inv_temp) <= STATIC_SHIFT_MAX_INV_TEMP,
            SPLIT_MASKS=_split_masks(zr.device, zc_k, precision, block_d),
            DOT_PRECISION=precision,
        )
    if splits > 1:
        torch.logsumexp(lse_parts, dim=0, out=lse_neg)
    # The positive joins only here (kernels/nt_xent_forward.py says why).
    torch.logaddexp(lse_neg, pos_logit, out=lse)
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
    precision = dot_precision(zc_k.dtype)
    shared_exp = float(inv_temp) <= SHARED_EXP_MAX_INV_TEMP
    scale_weights = zc_k.dtype == torch.float16
    # Per-column factor of the shared exponential, b_k = g_k exp(inv_temp - lse_k), computed once
    # here instead of by every program on every tile (fp16 and the two-exponential path: unused).
    precompute = shared_exp and not scale_weights
    col_w = g_c * torch.exp(float(inv_temp) - lse_c) if precompute else g_c
    # fp16 weights are scaled per row by max|g| (a [1] tensor: no host sync).
    g_max = g_c.abs().amax().reshape(1) if scale_weights else g_c
    # The positive column's weight is -(q_r + q_pos), q = g·Q with Q = 1 - P(pos) = exp(lse_neg - lse)
    # accurate to its own size even where P(pos) -> 1 (kernels/nt_xent_backward.py).
    pos_q = g_c * torch.exp(lse_neg_c - lse_c)

    if num_features >= SLAB_MIN_FEATURES:
        slab_args = (zr_k, zc_k, row_ids.contiguous(), lse_c, g_c, col_w, pos_q, g_max)
        slab_args += (float(inv_temp),)
        _backward_by_slabs(*slab_args, grad, shared_exp, scale_weights, precision)
        return grad
    splits = _column_splits(zr.device, num_rows, num_cols)
    # Each column split writes its partial gradient; one split writes grad itself.
    parts = grad.unsqueeze(0)
    if splits > 1:
        parts = torch.empty(splits, *grad.shape, dtype=torch.float32, device=zr.device)

    def grid(meta):
        return (
            triton.cdiv(num_rows, meta["BLOCK_M"]),
            triton.cdiv(num_features, block_d),
            splits,
        )

    with device_guard(zr.device):
        nt_xent_backward_kernel[grid](
            zr_k,
            zc_k,
            row_ids.contiguous(),
            lse_c,
            g_c,
            col_w,
            pos_q,
            g_max,
            parts,
            num_rows,
            num_cols,
            num_features,
            zr_k.stride(0),
            zr_k.stride(1),
            zc_k.stride(0),
            zc_k.stride(1),
            parts.stride(0),
            parts.stride(1),
            parts.stride(2),
            float(inv_temp),
            BLOCK_D=block_d,
            SINGLE_D=single_d,
            SHARED_EXP=shared_exp,
            SCALE_WEIGHTS=scale_weights,
            SPLIT_MASKS=_split_masks(zr.device, zc_k, precision, block_d),
            DOT_PRECISION=precision,
        )
    if splits > 1:
        torch.sum(parts, dim=0, out=grad)
    return grad


def _backward_by_slabs(
    zr: Tensor,
    zc: Tensor,
    row_ids: Tensor,
    lse_c: Tensor,
    g_c: Tensor,
    col_w: Tensor,
    pos_q: Tensor,
    g_max: Tensor,
    inv_temp: float,
    grad: Tensor,
    shared_exp: bool,
    scale_weights: bool,
    precision: str,
) -> None:
    """grad [M, D] fp32 slab by slab: the weights kernel writes W [rows, C] in the operand dtype, one
    matmul W·zc accumulates in fp32. A slab has about D rows, so W is about the size of zc."""
    import triton

    from fastclr.kernels import configs
    from fastclr.kernels.nt_xent_weights import nt_xent_weights_kernel

    num_rows, num_features = zr.shape
    num_cols = zc.shape[0]
    slab_rows = min(num_rows, max(num_features, SLAB_MIN_ROWS))
    weights = torch.empty(slab_rows, num_cols, dtype=zc.dtype, device=zc.device)
    unscale = torch.empty(slab_rows if scale_weights else 1, dtype=torch.float32, device=zc.device)
    for start in range(0, num_rows, slab_rows):
        rows = min(slab_rows, num_rows - start)
        zr_slab = zr[start : start + rows]

        def grid(meta, rows=rows):
            return (triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(num_cols, meta["BLOCK_N"]))

        with device_guard(zr.device):
            nt_xent_weights_kernel[grid](
                zr_slab,
                zc,
                row_ids[start : start + rows],
                lse_c,
                g_c,
                col_w,
                pos_q,
                g_max,
                weights,
                unscale,
                rows,
                num_cols,
                num_features,
                zr_slab.stride(0),
                zr_slab.stride(1),
                zc.stride(0),
                zc.stride(1),
                weights.stride(0),
                weights.stride(1),
                inv_temp,
                BLOCK_D=configs.CHUNK_BLOCK_D,
                SHARED_EXP=shared_exp,
                SCALE_WEIGHTS=scale_weights,
                DOT_PRECISION=precision,
            )
        out = grad[start : start + rows]
        out.copy_(_fp32_product(weights[:rows], zc))
        if scale_weights:
            out.mul_(unscale[:rows, None])
        out.mul_(inv_temp)


def _fp32_product(a: Tensor, b: Tensor) -> Tensor:
    """a @ b accumulated and returned in fp32: cuBLAS takes fp16/bf16 operands with an fp32 output
    on CUDA; fp32 operands follow torch's matmul precision, as the kernels' DOT_PRECISION does."""
    if a.device.type == "cuda" and a.dtype in (torch.float16, torch.bfloat16):
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a.float(), b.float())
