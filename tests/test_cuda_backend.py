"""The CUDA C++ backend (csrc/, fastclr/ops/cuda_backend.py).

Without a GPU: laziness and availability reasons always; where nvcc is found (CI has it; force
with FASTCLR_TEST_CUDA_BUILD=1, skip with =0) the extension is JIT-compiled and its input validation exercised on CPU tensors, which
must be rejected with a message naming the argument before any CUDA call.
On a GPU (`gpu` marker): the primitives against float64 chunked on the same rounded inputs, square
and rectangular, odd sizes, poisoned outputs, the full loss against the float64 reference, and
the Triton backend when it is usable.
"""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastclr.ops import chunked, cuda_backend
from fastclr.ops.nt_xent import nt_xent
from fastclr.ops.reference import nt_xent_reference
from tests.loss_cases import assert_at_most_twice_torchs_error, reference_value_and_grads

REPO_ROOT = Path(__file__).resolve().parents[1]
NVCC_FOUND = (
    shutil.which("nvcc") is not None
    or Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc").exists()
)
BUILD_REQUESTED = os.environ.get("FASTCLR_TEST_CUDA_BUILD", "1" if NVCC_FOUND else "0") == "1"
LOW_PRECISION = (torch.float16, torch.bfloat16)
DTYPES = (torch.float32, *LOW_PRECISION)
TEMPERATURES = (0.05, 0.1, 0.5, 1.0)

# Max abs error of the primitives against float64 on the same rounded inputs, relative to the
# scale of the quantity. Forward: products of fp16/bf16 values are exact in fp32, so every dtype
# gets fp32-level error in the logits (tensor cores may truncate the accumulator: a little slack).
# Backward: the weights feed the second tile product in the compute dtype, one rounding each.
FORWARD_ATOL = {torch.float32: 2e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4}
# The floor (relative to inv_temp * max|g|, the size of one weighted term) covers rows whose exact
# gradient cancels to ~0, e.g. N = 1.
BACKWARD_RTOL = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2e-2}
BACKWARD_FLOOR = 1e-5


def test_import_does_not_build_or_load_the_extension() -> None:
    code = (
        "import sys, fastclr, fastclr.ops.cuda_backend as cb; "
        "assert cb._extension is None; "
        "assert 'fastclr._C_nt_xent' not in sys.modules; "
        "assert 'torch.utils.cpp_extension' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=REPO_ROOT)


def test_availability_reasons_need_no_extension() -> None:
    assert cuda_backend.availability(torch.device("cpu"), torch.float32) == "needs a CUDA tensor"
    reason = cuda_backend.availability(torch.device("cuda"), torch.float64)
    assert reason is not None and "float64" in reason


@pytest.mark.skipif(not BUILD_REQUESTED, reason="no nvcc found (or FASTCLR_TEST_CUDA_BUILD=0)")
def test_extension_builds_and_rejects_bad_inputs_before_touching_cuda() -> None:
    ext = cuda_backend.load_extension()
    assert callable(ext.forward_rows) and callable(ext.backward_rows)

    zc = F.normalize(torch.randn(6, 5), dim=1)
    zr, ids = zc[:4].clone(), torch.arange(4)
    lse_c, g_c = torch.randn(6), torch.randn(6)
    forward_cases = [
        ((zr, zc, ids, 2.0), ValueError, "zr must be a CUDA tensor"),
        ((zr[0], zc, ids, 2.0), ValueError, "zr must be 2-D"),
        ((zr, zc[:, :4], ids, 2.0), ValueError, "zc must have zr's feature size"),
        ((zr, zc[:5], ids, 2.0), ValueError, "zc must have an even number of rows"),
        ((zr, zc, ids[:3], 2.0), ValueError, "row_ids must have shape"),
        ((zr, zc.half(), ids, 2.0), TypeError, "zc must have the dtype of zr"),
        ((zr.double(), zc.double(), ids, 2.0), TypeError, "zr must be float32, float16 or"),
        ((zr, zc, ids.int(), 2.0), TypeError, "row_ids must be int64"),
        ((zr, zc, ids, math.nan), ValueError, "inv_temp must be a finite positive"),
        ((zr, zc, ids, 0.0), ValueError, "inv_temp must be a finite positive"),
    ]
    for args, error, message in forward_cases:
        with pytest.raises(error, match=message):
            ext.forward_rows(*args)
    backward_cases = [
        ((zr, zc, ids, lse_c, lse_c, g_c, 2.0), ValueError, "zr must be a CUDA tensor"),
        ((zr, zc, ids, lse_c[:5], lse_c, g_c, 2.0), ValueError, "lse_c must have shape"),
        ((zr, zc, ids, lse_c, lse_c[:5], g_c, 2.0), ValueError, "lse_neg_c must have shape"),
        ((zr, zc, ids, lse_c, lse_c.double(), g_c, 2.0), TypeError, "lse_neg_c must be float32"),
        ((zr, zc, ids, lse_c, lse_c, g_c.double(), 2.0), TypeError, "g_c must be float32"),
        ((zr, zc, ids.int(), lse_c, lse_c, g_c, 2.0), TypeError, "row_ids must be int64"),
    ]
    for args, error, message in backward_cases:
        with pytest.raises(error, match=message):
            ext.backward_rows(*args)
    with pytest.raises(ValueError, match="zr must be a CUDA tensor"):
        cuda_backend.forward_rows(zr, zc, ids, 2.0)
    with pytest.raises(ValueError, match="zr must be a CUDA tensor"):
        cuda_backend.backward_rows(zr, zc, ids, lse_c, lse_c, g_c, 2.0)


# ---------------------------------------------------------------------------------------------
# GPU: correctness


@pytest.fixture(scope="module")
def cuda() -> torch.device:
    device = torch.device("cuda")
    if torch.cuda.get_device_capability(device) < (8, 0):
        pytest.skip("the CUDA kernels need compute capability 8.0+")
    assert cuda_backend.availability(device, torch.float16) is None
    return device


def make_rows(n: int, d: int, m: int | None, dtype: torch.dtype, device: torch.device):
    """zc [2n, d] normalized in the compute dtype; zr = zc[row_ids] (all rows, in order, when m is
    None, else m random rows in random order, repeats allowed)."""
    zc = F.normalize(torch.randn(2 * n, d, dtype=torch.float64), dim=1).to(dtype).to(device)
    if m is None:
        row_ids = torch.arange(2 * n, device=device)
    else:
        row_ids = torch.randint(0, 2 * n, (m,), device=device)
    return zc[row_ids].contiguous(), zc, row_ids


# (N, D, M): odd N and D, D=1, N=1, not block multiples, several D stages and gradient-column
# blocks, exact block multiples, rectangular row subsets.
SHAPES = [
    (1, 1, None),
    (1, 3, None),
    (3, 7, None),
    (17, 3, None),
    (32, 64, None),
    (37, 64, None),
    (100, 130, None),
    (257, 33, None),
    (129, 257, 50),
    (500, 128, 333),
    (2048, 96, None),
]


def shape_id(shape: tuple) -> str:
    n, d, m = shape
    return f"N{n}-D{d}-M{'all' if m is None else m}"


def _forward_check(zr, zc, row_ids, inv_temp, dtype) -> None:
    ours = cuda_backend.forward_rows(zr, zc, row_ids, inv_temp)
    exact = chunked.forward_rows(zr.double(), zc.double(), row_ids, inv_temp)
    atol = FORWARD_ATOL[dtype] * inv_temp
    for got, want in zip(ours, exact, strict=True):  # lse, pos_logit, lse_neg (-inf at N = 1)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, atol=atol, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_forward_matches_float64(cuda, shape, dtype) -> None:
    n, d, m = shape
    inv_temp = 1.0 / TEMPERATURES[(n + d) % len(TEMPERATURES)]
    _forward_check(*make_rows(n, d, m, dtype, cuda), inv_temp, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("upstream", ["random", "mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_backward_matches_float64(cuda, shape, dtype, upstream) -> None:
    n, d, m = shape
    inv_temp = 1.0 / TEMPERATURES[(n + 2 * d) % len(TEMPERATURES)]
    zr, zc, row_ids = make_rows(n, d, m, dtype, cuda)
    all_ids = torch.arange(2 * n, device=cuda)
    lse_c, _, lse_neg_c = (
        t.float() for t in chunked.forward_rows(zc.double(), zc.double(), all_ids, inv_temp)
    )
    # "mean" is what training sends: g = 1/C, where fp16 weights would underflow without scaling.
    g_c = (
        torch.randn(2 * n, device=cuda)
        if upstream == "random"
        else torch.full((2 * n,), 1.0 / (2 * n), device=cuda)
    )
    grad = cuda_backend.backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp)
    expected = chunked.backward_rows(
        zr.double(),
        zc.double(),
        row_ids,
        lse_c.double(),
        lse_neg_c.double(),
        g_c.double(),
        inv_temp,
    )
    assert grad.dtype == torch.float32 and grad.shape == zr.shape
    atol = BACKWARD_RTOL[dtype] * expected.abs().max().item()
    atol += BACKWARD_FLOOR * inv_temp * g_c.abs().max().item()
    torch.testing.assert_close(grad.double(), expected, atol=atol, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_poisoned_outputs_are_fully_written(cuda, dtype) -> None:
    ext = cuda_backend.load_extension()
    zr, zc, row_ids = make_rows(77, 70, 99, dtype, cuda)
    lse_c, g_c = torch.rand(154, device=cuda) + 3.0, torch.randn(154, device=cuda)
    lse_neg_c = lse_c - torch.rand(154, device=cuda)
    outs = ext.forward_rows(zr, zc, row_ids, 4.0)
    poisoned = [torch.full_like(t, math.nan) for t in outs]
    ext.forward_rows(
        zr, zc, row_ids, 4.0, lse=poisoned[0], pos_logit=poisoned[1], lse_neg=poisoned[2]
    )
    assert all(torch.equal(got, want) for got, want in zip(poisoned, outs, strict=True))
    grad = ext.backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, 4.0)
    grad_out = torch.full_like(grad, math.nan)
    ext.backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, 4.0, grad=grad_out)
    assert torch.isfinite(grad_out).all() and torch.equal(grad_out, grad)


@pytest.mark.gpu
def test_out_of_range_row_ids_give_nan_rows_not_a_crash(cuda) -> None:
    zr, zc, row_ids = make_rows(40, 16, 5, torch.float32, cuda)
    row_ids[1], row_ids[3] = 80, -1  # C = 80
    lse, pos, lse_neg = cuda_backend.forward_rows(zr, zc, row_ids, 2.0)
    ones = torch.ones(80, device=cuda)
    grad = cuda_backend.backward_rows(zr, zc, row_ids, ones, ones - 0.5, ones, 2.0)
    torch.cuda.synchronize()
    bad = torch.tensor([False, True, False, True, False], device=cuda)
    for out in (lse, pos, lse_neg, grad):
        assert torch.isnan(out[bad]).all() and torch.isfinite(out[~bad]).all()


@pytest.mark.gpu
def test_wrapper_accepts_non_contiguous_inputs(cuda) -> None:
    zr, zc, row_ids = make_rows(30, 48, None, torch.float16, cuda)
    wide = torch.zeros(60, 96, dtype=torch.float16, device=cuda)
    wide[:, ::2] = zc
    strided = wide[:, ::2]
    assert not strided.is_contiguous()
    for got, want in zip(
        cuda_backend.forward_rows(strided, strided, row_ids, 2.0),
        cuda_backend.forward_rows(zr, zc, row_ids, 2.0),
        strict=True,
    ):
        assert torch.equal(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_unaligned_rows_take_the_element_wise_path_with_the_same_results(cuda, dtype) -> None:
    # D = 128 rows are 16-byte aligned (cp.async path) unless the storage starts mid-vector: one
    # element in, the host must pick the element-wise loads; both must agree with float64.
    zr, zc, row_ids = make_rows(70, 128, 90, dtype, cuda)
    shifted = torch.empty(zc.numel() + 1, dtype=dtype, device=cuda)[1:].view_as(zc)
    shifted.copy_(zc)
    assert shifted.data_ptr() % 16 != 0
    _forward_check(zc[row_ids], shifted, row_ids, 10.0, dtype)
    _forward_check(zr, zc, row_ids, 10.0, dtype)
    zc64 = zc.double().cpu()
    lse, _, lse_neg = chunked.forward_rows(zc64, zc64, torch.arange(140), 10.0)
    g = torch.rand(140, dtype=torch.float64)
    args = (lse.float().to(cuda), lse_neg.float().to(cuda), g.float().to(cuda), 10.0)
    aligned = cuda_backend.backward_rows(zr, zc, row_ids, *args)
    unaligned = cuda_backend.backward_rows(zr, shifted, row_ids, *args)
    torch.testing.assert_close(unaligned, aligned, atol=1e-6 * aligned.abs().max().item(), rtol=0)


def test_static_tool_counts_16_byte_global_loads() -> None:
    from fastclr.bench.static import cuda_ext, sass

    text = "\n".join(
        f"        /*{16 * i:04x}*/                   {op} R0, [R2.64] ;"
        for i, op in enumerate(
            ["LDGSTS.E.BYPASS.128", "LDG.E.128", "LDG.E.U16", "LDG.E", "LDG.E.64", "LDGDEPBAR"]
        )
    )
    instructions, _ = sass.parse(text)
    assert cuda_ext.global_loads(instructions) == {"16-byte": 2, "narrower": 3}
    assert cuda_ext.global_loads(instructions, 0x10, 0x20) == {"16-byte": 1, "narrower": 1}


def test_static_tool_sets_the_cuda_estimate_beside_the_reference() -> None:
    from fastclr.bench.static.render import cuda_estimate_lines

    def row(kernel: str, serialized: float) -> dict:
        estimate = {"overlapped_us": serialized / 2, "serialized_us": serialized}
        return {"cc": 90, "variant": "16-byte", "dtype": "bf16", "kernel": kernel,
                "estimate_at_least": {"H100 SXM": estimate}}  # fmt: skip

    def verdict(forward: float, backward: float) -> str:
        document = {"cuda": [row("forward", forward), row("backward", backward)]}
        lines = cuda_estimate_lines(document, 8192, 128, (750.0, 900.0))
        assert "ESTIMATE" in lines[0] and lines[-1].startswith("| bf16 |")
        return lines[-1].split("|")[-2].strip()

    assert verdict(100.0, 200.0) == "lower bound below"
    assert verdict(300.0, 500.0) == "overlaps"
    assert verdict(400.0, 600.0) == "no"


@pytest.mark.gpu
def test_extension_validates_cuda_inputs(cuda) -> None:
    ext = cuda_backend.load_extension()
    zr, zc, row_ids = make_rows(8, 16, None, torch.float32, cuda)
    with pytest.raises(ValueError, match="zc must be on"):
        ext.forward_rows(zr, zc.cpu(), row_ids, 2.0)
    with pytest.raises(ValueError, match="row_ids must be on"):
        ext.forward_rows(zr, zc, row_ids.cpu(), 2.0)
    with pytest.raises(ValueError, match="zr must be contiguous"):
        ext.forward_rows(zr.T.contiguous().T, zc, row_ids, 2.0)
    with pytest.raises(TypeError, match="lse must be float32"):
        ext.forward_rows(zr, zc, row_ids, 2.0, lse=torch.empty(16, device=cuda).double())
    with pytest.raises(ValueError, match="grad must have shape"):
        lse_c = torch.zeros(16, device=cuda)
        ext.backward_rows(
            zr, zc, row_ids, lse_c, lse_c, lse_c, 2.0, grad=torch.empty(16, device=cuda)
        )


@pytest.mark.gpu
def test_memory_stays_far_below_a_c_by_c_matrix(cuda) -> None:
    c, d = 16384, 128
    zr, zc, row_ids = make_rows(c // 2, d, None, torch.float16, cuda)
    g_c = torch.full((c,), 1.0 / c, device=cuda)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(cuda)
    before = torch.cuda.memory_allocated(cuda)
    lse, pos, lse_neg = cuda_backend.forward_rows(zr, zc, row_ids, 10.0)
    grad = cuda_backend.backward_rows(zr, zc, row_ids, lse, lse_neg, g_c, 10.0)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated(cuda) - before
    assert extra <= 2 * grad.numel() * 4 + 6 * c * 4, extra  # outputs only; C x C fp32 is 1 GiB
    assert torch.isfinite(grad).all() and torch.isfinite(lse - pos).all()


# ---------------------------------------------------------------------------------------------
# GPU: the full loss through the shared autograd wrapper and the public API


@pytest.mark.gpu
@pytest.mark.parametrize("n, d", [(1, 5), (3, 1), (37, 3), (100, 128), (300, 200)])
def test_loss_and_gradients_match_float64_reference_fp32(cuda, n, d) -> None:
    temperature = TEMPERATURES[(n + d) % len(TEMPERATURES)]
    z1, z2 = torch.randn(n, d, device=cuda), torch.randn(n, d, device=cuda)
    upstream = torch.randn(2 * n, device=cuda)
    ref_rows, ref_g1, ref_g2 = reference_value_and_grads(z1, z2, temperature, upstream)
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    rows = nt_xent(a, b, temperature, reduction="none", backend="cuda")
    g1, g2 = torch.autograd.grad((rows * upstream).sum(), [a, b])
    atol = 2e-5 / temperature
    shortest = torch.cat([z1, z2]).norm(dim=1).min().item()
    torch.testing.assert_close(rows.double(), ref_rows, atol=atol, rtol=1e-5)
    grad_tol = dict(atol=atol / min(shortest, 1.0), rtol=1e-5)
    torch.testing.assert_close(g1.double(), ref_g1, **grad_tol)
    torch.testing.assert_close(g2.double(), ref_g2, **grad_tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("n, d, temperature", [(37, 64, 0.2), (1000, 128, 0.1), (129, 3, 0.5)])
def test_low_precision_error_at_most_twice_torchs_own(cuda, dtype, n, d, temperature) -> None:
    z1 = torch.randn(n, d, device=cuda).to(dtype)
    z2 = torch.randn(n, d, device=cuda).to(dtype)
    upstream = torch.randn(2 * n, device=cuda)
    exact = reference_value_and_grads(z1, z2, temperature, upstream)

    def rows_and_grads(fn):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        rows = fn(a, b)
        ga, gb = torch.autograd.grad((rows * upstream.to(rows.dtype)).sum(), [a, b])
        return rows.double(), ga.double(), gb.double()

    ours = rows_and_grads(lambda a, b: nt_xent(a, b, temperature, reduction="none", backend="cuda"))
    torchs = rows_and_grads(lambda a, b: nt_xent_reference(a, b, temperature, reduction="none"))
    for mine, theirs, want in zip(ours, torchs, exact, strict=True):
        assert_at_most_twice_torchs_error(mine, theirs, want, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 3, None), (100, 130, None), (129, 257, 50)], ids=shape_id)
def test_agrees_with_triton_backend(cuda, shape, dtype) -> None:
    triton_backend = pytest.importorskip("fastclr.ops.triton_backend")
    reason = triton_backend.availability(cuda, dtype)
    if reason is not None:
        pytest.skip(f"triton backend not usable: {reason}")
    n, d, m = shape
    zr, zc, row_ids = make_rows(n, d, m, dtype, cuda)
    lse_c, _, lse_neg_c = (
        t.float() for t in chunked.forward_rows(zc, zc, torch.arange(2 * n, device=cuda), 5.0)
    )
    g_c = torch.randn(2 * n, device=cuda)
    for ours, theirs in zip(
        cuda_backend.forward_rows(zr, zc, row_ids, 5.0),
        triton_backend.forward_rows(zr, zc, row_ids, 5.0),
        strict=True,
    ):
        torch.testing.assert_close(ours, theirs.float(), atol=2 * FORWARD_ATOL[dtype] * 5, rtol=0)
    ours = cuda_backend.backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, 5.0)
    theirs = triton_backend.backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, 5.0).float()
    atol = 2 * BACKWARD_RTOL[dtype] * theirs.abs().max().item()
    atol += 2 * BACKWARD_FLOOR * 5.0 * g_c.abs().max().item()
    torch.testing.assert_close(ours, theirs, atol=atol, rtol=0)
