"""The loss family's Triton kernels (fastclr/ops/family_triton.py) against the chunked spec in
float64 on the same rounded inputs, and the members on backend="triton" against the float64
oracles written from the papers (tests/loss_cases.py).

Without CUDA these run on CPU through the Triton interpreter (TRITON_INTERPRET=1, set below and in
conftest.py before triton is first imported): sizes stay small, and bf16 operands are upcast there
(the interpreter's bf16 tl.dot is wrong), so bf16's own rounding is checked by the `gpu` test.
The interpreter's BLOCK_D bound is 128, so D = 130 takes the chunked-feature path.

Every kernel output is allocated poisoned (NaN) so an element the kernel fails to write fails.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton")

from fastclr.ops import backends, family, family_triton  # noqa: E402
from fastclr.ops.clip_loss import clip_loss  # noqa: E402
from fastclr.ops.family import AnchorStats  # noqa: E402
from fastclr.ops.nt_xent import nt_xent  # noqa: E402
from fastclr.ops.sup_con import sup_con  # noqa: E402
from tests.loss_cases import (  # noqa: E402
    clip_oracle,
    dclw_weights,
    nt_xent_queue_oracle,
    sup_con_oracle,
)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = torch.device("cpu" if INTERPRET else "cuda")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Gradient error relative to max |exact|: the second product takes its weights in the operand
# dtype (about 2x its unit roundoff; fp32 leaves room for tf32x3 on a GPU).
GRAD_RTOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.empty returns NaN-filled floating tensors, so unwritten kernel outputs show up."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        out = real_empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch, "empty", empty)


def unit_rows(rows: int, features: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(rows, features), dim=1).to(dtype).to(DEVICE)


def group_labels(rows: int) -> torch.Tensor:
    """Shuffled labels of groups of 1..5 rows: anchors with 0..4 positives, singletons included."""
    sizes, total = [], 0
    while total < rows:
        sizes.append(min(1 + len(sizes) % 5, rows - total))
        total += sizes[-1]
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return labels[torch.randperm(rows)].to(DEVICE)


def random_stats(lse: torch.Tensor, count: torch.Tensor) -> AnchorStats:
    n = lse.shape[0]
    return AnchorStats(lse, torch.randn(n, dtype=lse.dtype), torch.randn(n, dtype=lse.dtype), count)


def to_kernel(stats: AnchorStats) -> AnchorStats:
    return AnchorStats(
        stats.lse.float().to(DEVICE),
        stats.grad_lse.float().to(DEVICE),
        stats.grad_pos.float().to(DEVICE),
        stats.count.to(DEVICE),
    )


def assert_primitives_match(zr, zc, row_labels, col_labels, inv_temp, *, row_ids, queue,
                            decoupled, column_role, dtype, unit_rows=False):  # fmt: skip
    """Forward and backward of the kernels against the float64 spec on the same rounded inputs.
    unit_rows: the rows are normalized; the backward may take its shared exponential."""
    cpu = {"row_ids": None if row_ids is None else row_ids.cpu(), "decoupled": decoupled}
    cpu["queue"] = None if queue is None else queue.cpu().double()
    zr64, zc64, rl, cl = zr.cpu().double(), zc.cpu().double(), row_labels.cpu(), col_labels.cpu()
    lse_x, pos_x, count_x = family.family_forward_rows(zr64, zc64, rl, cl, inv_temp, **cpu)
    kw = {"row_ids": row_ids, "queue": queue, "decoupled": decoupled}
    lse, pos, count = family_triton.family_forward_rows(
        zr, zc, row_labels, col_labels, inv_temp, **kw
    )
    assert lse.dtype == pos.dtype == torch.float32 and count.dtype == torch.int64
    # fp32 sums of exact products: fp32-accurate whatever the operand dtype, to a few ulps of the
    # largest logit |s| <= inv_temp·|a|·|b| (unnormalized two towers: far above inv_temp).
    norms = zr64.norm(dim=1).max().item() * zc64.norm(dim=1).max().item()
    tol = {"atol": 2e-6 * inv_temp * max(1.0, norms), "rtol": 2e-6}
    torch.testing.assert_close(lse.cpu().double(), lse_x, **tol)
    torch.testing.assert_close(pos.cpu().double(), pos_x, **tol)
    assert torch.equal(count.cpu(), count_x)

    rows = random_stats(lse_x, count_x)
    columns = None
    if column_role:  # the columns' own stats as anchors (all of them against the rows' columns)
        if row_ids is None:  # two towers: the columns against the rows
            col_lse, _, col_count = family.family_forward_rows(zc64, zr64, cl, rl, inv_temp)
        else:
            every = torch.arange(zc.shape[0])
            col_lse, _, col_count = family.family_forward_rows(
                zc64, zc64, cl, cl, inv_temp, **{**cpu, "row_ids": every}
            )
        columns = random_stats(col_lse, col_count)
    grad_x, sdot_x, _ = family.family_backward_rows(
        zr64, zc64, rl, cl, inv_temp, rows, columns, **cpu
    )
    grad, sdot, none = family_triton.family_backward_rows(
        zr, zc, row_labels, col_labels, inv_temp, to_kernel(rows),
        None if columns is None else to_kernel(columns), **kw, unit_rows=unit_rows,
    )  # fmt: skip
    assert none is None and grad.dtype == torch.float32 and grad.shape == zr.shape
    assert torch.isfinite(grad).all()
    error = (grad.cpu().double() - grad_x).abs().max().item()
    assert error <= GRAD_RTOL[dtype] * grad_x.abs().max().item() + 1e-6 * inv_temp, error
    # sum G s: fp32 weights times fp32 scores; |G s| summed is at most 2 c sum(|u| + |v|).
    bound = 2 * inv_temp * (rows.grad_lse.abs().sum() + rows.grad_pos.abs().sum()).item()
    assert abs(sdot.item() - sdot_x.item()) <= 1e-5 * bound


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("m", "d", "k", "decoupled", "temperature"),
    [
        (37, 20, 0, False, 0.5),
        (50, 130, 13, True, 0.1),
        (3, 1, 5, False, 0.02),  # inv_temp 50: no shared exponential
        (29, 67, 0, True, 0.1),
    ],
)
def test_one_tower_matches_spec(m: int, d: int, k: int, decoupled: bool, temperature, dtype):
    """SupCon / NT-Xent shape: rows are the columns (self masked), with or without a queue; the
    backward with one exponential per role and with the shared one of normalized rows."""
    z = unit_rows(m, d, dtype)
    labels = group_labels(m)
    queue = unit_rows(k, d, dtype) if k else None
    for shared in (False, True):
        assert_primitives_match(
            z, z, labels, labels, 1 / temperature, row_ids=torch.arange(m, device=DEVICE),
            queue=queue, decoupled=decoupled, column_role=True, dtype=dtype, unit_rows=shared,
        )  # fmt: skip


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16))
def test_rectangular_rows_match_spec(dtype) -> None:
    """A shuffled subset of the rows against all columns (one rank across ranks), plus a queue."""
    c, d = 70, 7
    zc = unit_rows(c, d, dtype)
    labels = group_labels(c)
    row_ids = torch.randperm(c)[:23].to(DEVICE)
    assert_primitives_match(
        zc[row_ids], zc, labels[row_ids], labels, 1 / 0.2, row_ids=row_ids,
        queue=unit_rows(9, d, dtype), decoupled=False, column_role=True, dtype=dtype,
        unit_rows=True,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "d"), [(29, 33), (2, 130)])
def test_two_towers_match_spec(n: int, d: int, dtype) -> None:
    """CLIP shape: no self column; the column role is the other tower's softmax. Unnormalized
    features (CLIP uses them as given): no bound on |s| is assumed."""
    a = torch.randn(n, d).to(dtype).to(DEVICE)  # |a| ~ sqrt(D): |s| well above c
    b = torch.randn(n, d).to(dtype).to(DEVICE)
    labels = torch.arange(n, device=DEVICE)
    assert_primitives_match(
        a, b, labels, labels, 0.5, row_ids=None, queue=None, decoupled=False, column_role=True,
        dtype=dtype,
    )  # fmt: skip


def test_strided_inputs() -> None:
    """Row and feature strides of the rows, columns and queue are honoured."""
    c, d = 30, 11
    zc = unit_rows(c, 2 * d, torch.float32)[:, ::2]
    row_ids = torch.arange(c - 1, -1, -2, device=DEVICE)
    zr = zc[row_ids].T.contiguous().T  # column-major rows
    queue = unit_rows(6, 3 * d, torch.float32)[:, 1::3]
    assert not (zc.is_contiguous() or zr.is_contiguous() or queue.is_contiguous())
    labels = group_labels(c)
    assert_primitives_match(
        zr, zc, labels[row_ids], labels, 4.0, row_ids=row_ids, queue=queue, decoupled=True,
        column_role=True, dtype=torch.float32,
    )  # fmt: skip


def test_rows_without_column_role() -> None:
    """columns=None: the row role only (the queue's columns have no gradient of their own)."""
    z = unit_rows(40, 24, torch.float32)
    labels = group_labels(40)
    for shared in (False, True):
        assert_primitives_match(
            z, z, labels, labels, 10.0, row_ids=torch.arange(40, device=DEVICE), queue=None,
            decoupled=False, column_role=False, dtype=torch.float32, unit_rows=shared,
        )  # fmt: skip


@pytest.mark.parametrize("loss_weight", [1.0, 1e-4, 1e-33])
def test_fp16_weights_keep_their_precision(loss_weight: float) -> None:
    """Upstream gradients ~loss_weight / M make the weights ~u/M, below fp16's smallest normal;
    the per-row scaling keeps them. For tiny gradients the scale is capped at 2^100 (no inf, no
    0·inf NaN), and the weights, then near fp16's subnormals, keep a few digits."""
    m, d = 100, 32
    z = unit_rows(m, d, torch.float16)
    labels = group_labels(m)
    ids = torch.arange(m, device=DEVICE)
    z64 = z.cpu().double()
    lse, _, count = family.family_forward_rows(z64, z64, labels.cpu(), labels.cpu(), 2.0,
                                               row_ids=ids.cpu())  # fmt: skip
    weight = torch.full((m,), loss_weight / m, dtype=torch.float64)
    stats = AnchorStats(lse, weight, -weight, count)
    exact, _, _ = family.family_backward_rows(
        z64, z64, labels.cpu(), labels.cpu(), 2.0, stats, stats, row_ids=ids.cpu()
    )
    kernel = to_kernel(stats)
    grad, _, _ = family_triton.family_backward_rows(
        z, z, labels, labels, 2.0, kernel, kernel, row_ids=ids, unit_rows=True
    )
    assert torch.isfinite(grad).all()
    error = (grad.cpu().double() - exact).abs().max().item()
    rtol = GRAD_RTOL[torch.float16] if loss_weight > 1e-30 else 0.05
    assert error <= rtol * exact.abs().max().item()


def value_and_grads(loss_fn, inputs, scale):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    scale = scale.detach().clone().requires_grad_()
    loss = loss_fn(*leaves, scale)
    return [loss.detach(), *torch.autograd.grad(loss, [*leaves, scale])]


def assert_all_close(ours, exact, atol):
    for mine, truth in zip(ours, exact, strict=True):
        torch.testing.assert_close(mine.cpu().double(), truth.double(), atol=atol, rtol=1e-5)


def test_sup_con_on_triton_matches_oracle() -> None:
    """Views [B, V, D], labels with 1..4 positives and anchors without (loss 0, not in the mean),
    a learnable temperature."""
    z = torch.randn(15, 3, 19).to(DEVICE)
    labels = group_labels(15) // 2  # anchors of one-sample labels still have V - 1 positives

    def oracle(z, tau):
        losses, has = sup_con_oracle(z.transpose(0, 1).flatten(0, 1), labels.repeat(3), tau)
        return losses.sum() / has.sum()

    ours = value_and_grads(lambda z, tau: sup_con(z, labels, tau, backend="triton"), [z],
                           torch.tensor(0.2, device=DEVICE))  # fmt: skip
    exact = value_and_grads(oracle, [z.cpu().double()], torch.tensor(0.2, dtype=torch.float64))
    assert_all_close(ours, exact, atol=2e-5)


def test_sup_con_singletons_on_triton() -> None:
    """[M, D] rows where some labels occur once: those anchors get loss 0 ("none") and no
    gradient of their own."""
    z = torch.randn(21, 8).to(DEVICE)
    labels = group_labels(21)
    ours = sup_con(z, labels, 0.3, reduction="none", backend="triton")
    exact, has = sup_con_oracle(z.cpu(), labels.cpu(), 0.3)
    assert (ours.cpu()[~has] == 0).all()
    torch.testing.assert_close(ours.cpu().double(), exact, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(("queue_rows", "decoupled", "sigma"), [(11, False, None), (0, True, 0.5),
                                                               (7, True, None)])  # fmt: skip
def test_nt_xent_queue_and_dcl_on_triton(queue_rows: int, decoupled: bool, sigma) -> None:
    n, d = 17, 12
    z1, z2 = torch.randn(n, d).to(DEVICE), torch.randn(n, d).to(DEVICE)
    queue = torch.randn(queue_rows, d).to(DEVICE) if queue_rows else None

    def ours_fn(a, b, tau):
        return nt_xent(a, b, tau, negatives=queue, decoupled=decoupled, dcl_weight_sigma=sigma,
                       backend="triton")  # fmt: skip

    def oracle(a, b, tau):
        weights = None if sigma is None else dclw_weights(a, b, sigma)
        q = None if queue is None else queue.cpu()
        return nt_xent_queue_oracle(a, b, q, tau, decoupled, weights).mean()

    tau = torch.tensor(0.25)
    ours = value_and_grads(ours_fn, [z1, z2], tau.to(DEVICE))
    exact = value_and_grads(oracle, [z1.cpu().double(), z2.cpu().double()], tau.double())
    assert_all_close(ours, exact, atol=2e-5)


def test_clip_loss_on_triton_matches_oracle() -> None:
    n, d = 23, 10
    a, b = torch.randn(n, d).to(DEVICE), torch.randn(n, d).to(DEVICE)
    a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)

    def ours_fn(a, b, scale):
        return clip_loss(a, b, scale, backend="triton")

    ours = value_and_grads(ours_fn, [a, b], torch.tensor(14.0, device=DEVICE))
    exact = value_and_grads(lambda a, b, s: clip_oracle(a, b, s).mean(),
                            [a.cpu().double(), b.cpu().double()],
                            torch.tensor(14.0, dtype=torch.float64))  # fmt: skip
    assert_all_close(ours, exact, atol=2e-5)


def test_launcher_rejects_bad_arguments() -> None:
    z = unit_rows(6, 4, torch.float32)
    labels = torch.arange(6, device=DEVICE) % 3
    with pytest.raises(ValueError, match=r"row_labels must be int64 \[6\]"):
        family_triton.family_forward_rows(z, z, labels.int(), labels, 2.0)
    with pytest.raises(ValueError, match=r"queue must be \[K, 4\]"):
        family_triton.family_forward_rows(
            z, z, labels, labels, 2.0, queue=unit_rows(3, 5, torch.float32)
        )
    with pytest.raises(TypeError, match="fp64: use backend='chunked'"):
        family_triton.family_forward_rows(z.double(), z.double(), labels, labels, 2.0)


def test_auto_picks_the_kernels_for_cuda_tensors() -> None:
    """Every member resolves to the Triton kernels for CUDA tensors where triton is usable (no GPU
    needed: only the registry is asked), to the spec on CPU; the CUDA backend refuses them."""
    cuda = torch.device("cuda")
    for member in backends.MEMBERS:
        assert backends.resolve_member(member, "auto", cuda, torch.bfloat16) == "triton"
        assert backends.resolve_member(member, "auto", torch.device("cpu"), torch.float32) == (
            "chunked"
        )
    assert backends.family_primitives("triton") is family_triton
    assert backends.member_report()["cuda"]["clip_loss"].startswith("the cuda backend has no")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_gpu_members_at_size(dtype) -> None:
    """The compiled kernels (autotuned configs, real bf16 tensor-core products) at 2N = 4096,
    D = 128, against the spec in float64: every member's value and gradients."""
    z = unit_rows(4096, 128, dtype)
    labels = torch.randint(0, 1024, (4096,), device=DEVICE)
    queue = unit_rows(1000, 128, dtype)
    for decoupled in (False, True):
        assert_primitives_match(
            z, z, labels, labels, 10.0, row_ids=torch.arange(4096, device=DEVICE), queue=queue,
            decoupled=decoupled, column_role=True, dtype=dtype, unit_rows=True,
        )  # fmt: skip
    labels = torch.arange(2048, device=DEVICE)
    assert_primitives_match(
        z[:2048], z[2048:], labels, labels, 30.0, row_ids=None, queue=None, decoupled=False,
        column_role=True, dtype=dtype,
    )  # fmt: skip


@pytest.mark.slow
def test_family_kernels_compile_for_sm90_without_spills(tmp_path) -> None:
    """Every config the autotuner keeps for the production path (bf16, D = 128, sm_90) compiles,
    fits the shared memory and spills nothing (`fastclr bench static`, no GPU; ~35 s)."""
    import json
    import subprocess
    import sys

    from fastclr.bench.static import toolchain

    missing = toolchain.missing_tools(("ptxas", "nvdisasm", "cuobjdump"))
    if missing:
        pytest.skip("needs " + "; ".join(missing))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "fastclr.cli.main", "bench", "static", "--arch", "90",
         "--kernel", "family_forward,family_backward", "--precision", "bf16", "--dim", "128",
         "--rows", "8192", "--no-cuda", "--out", str(tmp_path), "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [r for r in json.loads((tmp_path / "static.json").read_text())["triton"] if r["kept"]]
    assert {r["kernel"] for r in rows} == {"family_forward", "family_backward"}
    bad = [(r["kernel"], r["config"], r.get("error"), r.get("spill_bytes")) for r in rows
           if "error" in r or not r["fits"] or r["spill_bytes"]]  # fmt: skip
    assert not bad, bad
