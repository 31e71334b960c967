"""The Triton backend's two primitives against the chunked spec and float64, and the full loss through
the shared autograd Function.

Without CUDA these run on CPU through the Triton interpreter (TRITON_INTERPRET=1, set below and in
conftest.py before triton is first imported); sizes stay small because every tile step costs
milliseconds there. With CUDA the same tests run the compiled kernels, and the `gpu` tests add bf16,
2N up to 65536, odd sizes, strided inputs and a peak-memory bound.

Every kernel output is allocated poisoned (NaN) so an element the kernel fails to write fails the test.
"""

import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton")

from fastclr.ops import chunked, triton_backend  # noqa: E402
from fastclr.ops.function import nt_xent_rows  # noqa: E402
from fastclr.ops.reference import nt_xent_reference  # noqa: E402
from tests.loss_cases import assert_at_most_twice_torchs_error, reference_value_and_grads  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE = torch.device("cpu" if INTERPRET else "cuda")
TEMPERATURES = (0.5, 0.1, 0.02)  # 0.02 (inv_temp 50) takes the backward's two-exponential path

# Largest error relative to max |exact| that the kernels may make on the primitives, given inputs
# already rounded to the dtype (fp32 accumulation everywhere). The backward's second product takes
# its weights in the operand dtype: about 2x that dtype's unit roundoff. fp32 leaves room for
# tf32x3 on the GPU.
GRAD_RTOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.empty returns NaN-filled floating tensors, so unwritten kernel outputs show up."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        out = real_empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch, "empty", empty)


def unit_rows(rows: int, features: int, dtype: torch.dtype, device=DEVICE) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(rows, features), dim=1).to(dtype).to(device)


def exact_primitives(zr, zc, row_ids, inv_temp, g_c):
    """float64 forward and backward of the chunked spec on the very same (rounded) inputs, computed
    on their device and returned on the CPU."""
    zr64, zc64 = zr.double(), zc.double()
    all_ids = torch.arange(zc.shape[0], device=zc.device)
    lse_all, _, lse_neg_all = chunked.forward_rows(zc64, zc64, all_ids, inv_temp)
    rows = chunked.forward_rows(zr64, zc64, row_ids, inv_temp)
    grad = chunked.backward_rows(zr64, zc64, row_ids, lse_all, lse_neg_all, g_c.double(), inv_temp)
    return (lse_all.cpu(), lse_neg_all.cpu()), tuple(t.cpu() for t in rows), grad.cpu()


def assert_primitives_match(zr, zc, row_ids, inv_temp, dtype):
    num_cols = zc.shape[0]
    g_c = torch.randn(num_cols, device=zc.device)
    lse_all, rows_exact, grad_exact = exact_primitives(zr, zc, row_ids, inv_temp, g_c)

    rows = triton_backend.forward_rows(zr, zc, row_ids, inv_temp)
    # lse, the positive logit and lse_neg (-inf at N = 1) are fp32 sums of exact products:
    # fp32-accurate for every dtype.
    tol = dict(atol=2e-6 * inv_temp, rtol=2e-6)
    for got, want in zip(rows, rows_exact, strict=True):
        assert got.dtype == torch.float32 and got.shape == (zr.shape[0],)
        torch.testing.assert_close(got.cpu().double(), want, **tol)

    lse_c, lse_neg_c = (t.float().to(zc.device) for t in lse_all)
    grad = triton_backend.backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp)
    assert grad.dtype == torch.float32 and grad.shape == zr.shape
    assert torch.isfinite(grad).all()
    scale = grad_exact.abs().max().item()
    error = (grad.cpu().double() - grad_exact).abs().max().item()
    # Floor: fp32 rounding of the logits (~1e-7 inv_temp) where the exact gradient cancels to ~0.
    floor = 1e-6 * inv_temp * g_c.abs().max().item()
    assert error <= GRAD_RTOL[dtype] * scale + floor, (error, scale, floor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("d", [1, 3, 64, 130])
@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 100])
def test_primitives_match_float64_spec(n: int, d: int, dtype: torch.dtype) -> None:
    """All rows (zr = zc); D = 130 takes the chunked-feature path under the interpreter."""
    inv_temp = 1.0 / TEMPERATURES[(n + d) % len(TEMPERATURES)]
    z = unit_rows(2 * n, d, dtype)
    assert_primitives_match(z, z, torch.arange(2 * n, device=DEVICE), inv_temp, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("n", "d", "rows"), [(17, 3, 5), (100, 130, 70), (64, 64, 128)])
def test_rectangular_rows(n: int, d: int, rows: int, dtype: torch.dtype) -> None:
    """A shuffled subset of the rows against all columns, as one rank of a multi-GPU step sees it."""
    zc = unit_rows(2 * n, d, dtype)
    # Rows from both views, shuffled: some of the first view, the rest of the second.
    first = torch.randperm(n)[: (rows + 1) // 2]
    second = n + torch.randperm(n)[: rows - first.numel()]
    row_ids = torch.cat([first, second])[torch.randperm(rows)].to(DEVICE)
    inv_temp = 1.0 / TEMPERATURES[rows % len(TEMPERATURES)]
    assert_primitives_match(zc[row_ids], zc, row_ids, inv_temp, dtype)


def test_strided_inputs() -> None:
    """Row and feature strides are honoured (no hidden .contiguous() assumptions)."""
    n, d = 20, 33
    base = unit_rows(2 * n, 2 * d, torch.float32)
    zc = base[:, ::2]
    row_ids = torch.arange(2 * n - 1, -1, -3, device=DEVICE)
    zr = zc[row_ids].T.contiguous().T  # column-major rows
    assert not zc.is_contiguous() and not zr.is_contiguous()
    assert_primitives_match(zr, zc, row_ids, 1 / 0.2, torch.float32)


@pytest.mark.parametrize("loss_weight", [1.0, 1e-4])
def test_fp16_weights_keep_their_precision(loss_weight: float) -> None:
    """With g = loss_weight / C (a weighted mean) the backward weights g·P are ~g/C, below fp16's
    smallest normal number; unscaled they lose most of their bits or flush to zero."""
    n, d = 128, 32
    z = unit_rows(2 * n, d, torch.float16)
    row_ids = torch.arange(2 * n, device=DEVICE)
    g_c = torch.full((2 * n,), loss_weight / (2 * n), device=DEVICE)
    lse_all, _, grad_exact = exact_primitives(z, z, row_ids, 2.0, g_c)
    lse_c, lse_neg_c = (t.float().to(DEVICE) for t in lse_all)
    grad = triton_backend.backward_rows(z, z, row_ids, lse_c, lse_neg_c, g_c, 2.0)
    error = (grad.cpu().double() - grad_exact).abs().max().item()
    assert error <= GRAD_RTOL[torch.float16] * grad_exact.abs().max().item()


def test_fp16_tiny_upstream_gradient_stays_finite() -> None:
    """0 < |g_r| + max|g| < ~4.8e-35 made the fp16 weight scale 2^14 / g_bound overflow to inf and
    the self column's 0·inf a NaN; the scale is clamped at 2^100 (as in csrc), so the gradient stays
    finite and, with the weights far below fp16's range even after scaling, close to exact."""
    n, d = 64, 16
    z = unit_rows(2 * n, d, torch.float16)
    row_ids = torch.arange(2 * n, device=DEVICE)
    g_c = torch.rand(2 * n, device=DEVICE) * 1e-35 + 1e-36
    lse_all, _, grad_exact = exact_primitives(z, z, row_ids, 2.0, g_c)
    lse_c, lse_neg_c = (t.float().to(DEVICE) for t in lse_all)
    grad = triton_backend.backward_rows(z, z, row_ids, lse_c, lse_neg_c, g_c, 2.0)
    assert torch.isfinite(grad).all(), "NaN/inf gradient for a tiny upstream gradient"
    error = (grad.cpu().double() - grad_exact).abs().max().item()
    assert error <= 0.05 * grad_exact.abs().max().item()


def rows_and_grads(z1, z2, temperature, upstream, loss_fn):
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    rows = loss_fn(a, b)
    ga, gb = torch.autograd.grad((rows * upstream.to(rows.dtype)).sum(), [a, b])
    return rows.double().cpu(), ga.double().cpu(), gb.double().cpu()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("n", "d"), [(1, 5), (3, 3), (37, 64), (64, 130)])
def test_nt_xent_rows_value_and_gradient(n: int, d: int, dtype: torch.dtype) -> None:
    """The full loss through NTXentRows: float64-accurate in fp32, and in fp16/bf16 at most 2x as
    wrong as PyTorch's own reference in that dtype. (bf16 operands are upcast under the
    interpreter, whose bf16 tl.dot is wrong.)"""
    temperature = TEMPERATURES[(n + d) % len(TEMPERATURES)]
    z1, z2 = torch.randn(n, d).to(dtype).to(DEVICE), torch.randn(n, d).to(dtype).to(DEVICE)
    upstream = torch.randn(2 * n, device=DEVICE)
    exact = reference_value_and_grads(z1.cpu(), z2.cpu(), temperature, upstream.cpu())
    ours = rows_and_grads(
        z1, z2, temperature, upstream, lambda a, b: nt_xent_rows(a, b, temperature, triton_backend)
    )
    assert ours[0].shape == (2 * n,)
    if dtype == torch.float32:
        shortest = torch.cat([z1, z2]).norm(dim=1).min().item()
        atol = 2e-5 / temperature
        for mine, truth, floor in zip(ours, exact, (1.0, shortest, shortest), strict=True):
            torch.testing.assert_close(mine, truth, atol=atol / min(floor, 1.0), rtol=1e-5)
        return
    torchs = rows_and_grads(
        z1.cpu(),
        z2.cpu(),
        temperature,
        upstream.cpu(),
        lambda a, b: nt_xent_reference(a, b, temperature, reduction="none"),
    )
    for mine, theirs, truth in zip(ours, torchs, exact, strict=True):
        assert_at_most_twice_torchs_error(mine, theirs, truth, dtype)


def test_fp32_mean_loss_through_the_function() -> None:
    n, d, temperature = 50, 24, 0.1
    z1 = torch.randn(n, d, device=DEVICE, requires_grad=True)
    z2 = torch.randn(n, d, device=DEVICE, requires_grad=True)
    loss = nt_xent_rows(z1, z2, temperature, triton_backend).mean()
    loss.backward()
    a, b = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    expected = nt_xent_reference(a, b, temperature)
    expected.backward()
    torch.testing.assert_close(loss.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z1.grad.double(), a.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(z2.grad.double(), b.grad, atol=1e-6, rtol=1e-4)


def test_availability() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert triton_backend.availability(cuda, dtype) is None
    assert "float64" in triton_backend.availability(cuda, torch.float64)
    cpu_reason = triton_backend.availability(cpu, torch.float32)
    assert (cpu_reason is None) == INTERPRET
    assert cpu_reason is None or "CUDA" in cpu_reason


def test_import_without_triton_reports_the_reason() -> None:
    """fastclr.ops.triton_backend imports without triton; availability says why it cannot run."""
    script = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, fastclr.ops.triton_backend as t\n"
        "print(t.availability(torch.device('cuda'), torch.float32))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "triton is not installed"


def test_bad_arguments_are_named() -> None:
    z = unit_rows(6, 4, torch.float32)
    ids = torch.arange(6, device=DEVICE)
    with pytest.raises(ValueError, match="even"):
        triton_backend.forward_rows(z[:5], z[:5], ids[:5], 2.0)
    with pytest.raises(ValueError, match="feature"):
        triton_backend.forward_rows(z[:, :3], z, ids, 2.0)
    with pytest.raises(ValueError, match="row_ids"):
        triton_backend.forward_rows(z, z, ids.int(), 2.0)
    with pytest.raises(TypeError, match="chunked"):
        triton_backend.forward_rows(z.double(), z.double(), ids, 2.0)
    with pytest.raises(ValueError, match="g_c"):
        lse_c = torch.zeros(6, device=DEVICE)
        triton_backend.backward_rows(z, z, ids, lse_c, lse_c, ids[:3].float(), 2.0)
    with pytest.raises(ValueError, match="lse_neg_c"):
        lse_c = torch.zeros(6, device=DEVICE)
        triton_backend.backward_rows(z, z, ids, lse_c, lse_c[:3], lse_c, 2.0)


# --- GPU only: compiled kernels, every dtype, large and odd sizes, memory ------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("n", "d"), [(1, 1), (1531, 67), (4096, 128), (777, 300), (2048, 256), (32768, 128)]
)
def test_gpu_primitives_all_dtypes(n: int, d: int, dtype: torch.dtype) -> None:
    """2N up to 65536, odd N and D, D past the single-block path (300), every dtype."""
    z = unit_rows(2 * n, d, dtype, device="cuda")
    assert_primitives_match(z, z, torch.arange(2 * n, device="cuda"), 1 / 0.1, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_rectangular_and_strided(dtype: torch.dtype) -> None:
    n, d = 3000, 130
    zc = unit_rows(2 * n, 2 * d, dtype, device="cuda")[:, ::2]
    row_ids = torch.randperm(2 * n, device="cuda")[:1234]
    assert_primitives_match(zc[row_ids], zc, row_ids, 1 / 0.07, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_nt_xent_rows_vs_torch_error(dtype: torch.dtype) -> None:
    n, d, temperature = 1000, 128, 0.1
    z1 = torch.randn(n, d, device="cuda").to(dtype)
    z2 = torch.randn(n, d, device="cuda").to(dtype)
    upstream = torch.randn(2 * n, device="cuda")
    exact = [t.cpu() for t in reference_value_and_grads(z1, z2, temperature, upstream)]
    ours = rows_and_grads(
        z1, z2, temperature, upstream, lambda a, b: nt_xent_rows(a, b, temperature, triton_backend)
    )
    torchs = rows_and_grads(
        z1,
        z2,
        temperature,
        upstream,
        lambda a, b: nt_xent_reference(a, b, temperature, reduction="none"),
    )
    for mine, theirs, truth in zip(ours, torchs, exact, strict=True):
        assert_at_most_twice_torchs_error(mine, theirs, truth, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_peak_memory_has_no_quadratic_term(dtype: torch.dtype) -> None:
    """At 2N = 65536 a C x C matrix would take 8-16 GiB; the kernels may add their outputs only."""
    n, d = 32768, 128
    z = unit_rows(2 * n, d, dtype, device="cuda")
    row_ids = torch.arange(2 * n, device="cuda")
    g_c = torch.full((2 * n,), 1.0 / (2 * n), device="cuda")
    # Warm-up: compile and autotune first (the autotuner's benchmark allocates an L2-flush buffer).
    lse, _, lse_neg = triton_backend.forward_rows(z, z, row_ids, 10.0)
    triton_backend.backward_rows(z, z, row_ids, lse, lse_neg, g_c, 10.0)
    torch.cuda.synchronize()
    for run in ("forward", "backward"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        if run == "forward":
            out = triton_backend.forward_rows(z, z, row_ids, 10.0)
        else:
            out = triton_backend.backward_rows(z, z, row_ids, lse, lse_neg, g_c, 10.0)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
        outputs = 2 * n * d * 4 + 5 * 2 * n * 4  # the fp32 gradient plus a few [C] vectors
        assert extra <= outputs + 2**20, (run, extra)
        assert extra < (2 * n) ** 2 // 64
        del out
