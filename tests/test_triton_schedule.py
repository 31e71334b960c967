"""The Triton kernels' schedules and paths against the float64 spec: both column-tile schedules
(SPLIT_MASKS: the masks only on the tiles holding a self/positive column, or every tile masked), one
or several programs per row block (column splits, merged by the launcher), and both forward shifts
(STATIC_SHIFT: the static bound inv_temp, or the online max).

The launcher picks the schedule per GPU, precision and size (kernels/configs.py split_masks,
column_splits); the tests force each one. C = 512 gives four 128-wide tiles under the
interpreter, so the unmasked loop runs.
"""

import pytest
import torch

from fastclr.kernels import configs
from fastclr.ops import triton_backend
from tests.test_triton_backend import (  # noqa: F401  (poisoned_empty: autouse fixture)
    DEVICE,
    assert_primitives_match,
    poisoned_empty,
    unit_rows,
)

# Column splits that walk no tile take log2(0) = -inf for their partial lse, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log2:RuntimeWarning")

# Row sets: aligned blocks, a block across tile borders, one whose positives wrap past C, and a
# shuffled subset (windows spanning most tiles).
SCHEDULE_ROWS = {
    "all": lambda c: torch.arange(c),
    "across_tiles": lambda c: torch.arange(c // 2 - 70, c // 2 + 3),
    "positives_wrap": lambda c: torch.cat([torch.arange(c - 5, c), torch.arange(0, 7)]),
    "shuffled": lambda c: torch.randperm(c)[:45],
}


@pytest.fixture(
    params=[(True, 1), (False, 1), (True, 3), (False, 3)],
    ids=["split_masks", "one_loop", "split_masks-3_column_splits", "one_loop-3_column_splits"],
)
def schedule(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, int]:
    """(SPLIT_MASKS, column splits) forced on the launchers."""
    split_masks, splits = request.param
    monkeypatch.setattr(triton_backend, "_split_masks", lambda *args: split_masks)
    monkeypatch.setattr(triton_backend, "_column_splits", lambda *args: splits)
    return request.param


@pytest.mark.parametrize("rows", list(SCHEDULE_ROWS))
@pytest.mark.parametrize(
    ("d", "dtype", "temperature"), [(24, torch.float32, 0.1), (67, torch.float16, 0.02)]
)
def test_both_schedules(
    rows: str, d: int, dtype: torch.dtype, temperature: float, schedule: tuple[bool, int]
) -> None:
    """Every row set, both exponential paths (inv_temp 10 and 50), odd D (the feature mask stays on
    every tile)."""
    num_cols = 512
    zc = unit_rows(num_cols, d, dtype)
    row_ids = SCHEDULE_ROWS[rows](num_cols).to(DEVICE)
    assert_primitives_match(zc[row_ids], zc, row_ids, 1.0 / temperature, dtype)


@pytest.mark.parametrize("num_cols", [6, 250])
def test_ragged_last_tile(num_cols: int, schedule: tuple[bool, int]) -> None:
    """C not a multiple of BLOCK_N: the columns past C stay masked on every schedule; at C = 6 (one
    tile) two of three column splits walk no tile and contribute nothing."""
    zc = unit_rows(num_cols, 16, torch.float32)
    row_ids = torch.arange(num_cols, device=DEVICE)
    assert_primitives_match(zc, zc, row_ids, 10.0, torch.float32)


@pytest.mark.parametrize("inv_temp", [triton_backend.STATIC_SHIFT_MAX_INV_TEMP, 50.0])
def test_forward_shift_paths_with_anti_aligned_rows(inv_temp: float) -> None:
    """The largest inv_temp of the static shift and one on the online max. Rows clustered around v
    and -v put most logits near -inv_temp, the static shift's worst case (terms down to
    exp(-2 inv_temp))."""
    num_cols, d = 256, 16
    v = torch.randn(d)
    signs = torch.where(torch.rand(num_cols, 1) < 0.5, 1.0, -1.0)
    z = torch.nn.functional.normalize(signs * v + 0.05 * torch.randn(num_cols, d), dim=1)
    z = z.to(DEVICE)
    row_ids = torch.arange(num_cols, device=DEVICE)
    assert_primitives_match(z, z, row_ids, inv_temp, torch.float32)


def test_launcher_passes_the_temperature_and_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    """STATIC_SHIFT up to STATIC_SHIFT_MAX_INV_TEMP, the online max above; SPLIT_MASKS from
    split_masks for both kernels."""
    from fastclr.kernels import nt_xent_backward, nt_xent_forward

    launched = []
    for module, name in (
        (nt_xent_forward, "nt_xent_forward_kernel"),
        (nt_xent_backward, "nt_xent_backward_kernel"),
    ):
        kernel = getattr(module, name)

        class Spy:
            def __getitem__(self, grid, kernel=kernel):
                def launch(*args, **kwargs):
                    launched.append(kwargs)
                    return kernel[grid](*args, **kwargs)

                return launch

        monkeypatch.setattr(module, name, Spy())
    z = unit_rows(8, 4, torch.float32)
    ids = torch.arange(8, device=DEVICE)
    limit = triton_backend.STATIC_SHIFT_MAX_INV_TEMP
    triton_backend.forward_rows(z, z, ids, limit)
    triton_backend.forward_rows(z, z, ids, limit * 1.01)
    lse, _, lse_neg = triton_backend.forward_rows(z, z, ids, 2.0)
    triton_backend.backward_rows(z, z, ids, lse, lse_neg, torch.ones(8, device=DEVICE), 2.0)
    assert [k["STATIC_SHIFT"] for k in launched[:3]] == [True, False, True]
    expected = configs.split_masks(None, 4, triton_backend.dot_precision(torch.float32), 16)
    assert [k["SPLIT_MASKS"] for k in launched] == [expected] * 4


@pytest.mark.parametrize(
    ("cc", "elem_bytes", "precision", "block_d", "split"),
    [
        (90, 2, "tf32", 256, True),
        (80, 2, "tf32", 128, True),
        (80, 2, "tf32", 256, False),
        (89, 2, "tf32", 256, False),
        (90, 4, "tf32x3", 64, False),
        (80, 4, "tf32", 128, True),
        (None, 4, "tf32x3", 128, False),
    ],
)
def test_split_rule(cc, elem_bytes: int, precision: str, block_d: int, split: bool) -> None:
    """Where the split schedule spilled in the static analysis it is off (kernels/configs.py)."""
    assert configs.split_masks(cc, elem_bytes, precision, block_d) is split


@pytest.mark.parametrize(
    ("rows", "cols", "sms", "splits"),
    [
        (8192, 8192, 132, 3),  # 128 row blocks: 3 splits give ~2.9 CTAs per SM
        (65536, 65536, 132, 1),  # the row blocks alone fill the GPU
        (8192, 1024, 132, 2),  # each split keeps >= 512 columns
        (64, 65536, 132, 4),  # capped
        (8192, 8192, None, 1),  # no GPU
    ],
)
def test_column_split_rule(rows: int, cols: int, sms, splits: int) -> None:
    assert configs.column_splits(rows, cols, sms) == splits


@pytest.mark.parametrize(
    ("dtype", "temperature"), [(torch.float32, 0.1), (torch.float16, 0.2), (torch.float32, 0.02)]
)
@pytest.mark.parametrize("rectangular", [False, True])
def test_large_d_slab_backward(
    dtype: torch.dtype, temperature: float, rectangular: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The large-D backward (weights slab + one matmul) against the float64 spec. The thresholds are
    lowered so D = 130 takes it under the interpreter, over several slabs of 16 rows (the last one
    partial); both exponential paths, fp16 weight scaling, a rectangular subset of rows."""
    monkeypatch.setattr(triton_backend, "SLAB_MIN_FEATURES", 100)
    monkeypatch.setattr(triton_backend, "SLAB_MIN_ROWS", 16)
    launched = []
    real = triton_backend._backward_by_slabs
    monkeypatch.setattr(
        triton_backend, "_backward_by_slabs", lambda *a: launched.append(1) or real(*a)
    )
    num_cols, d = 70, 130
    zc = unit_rows(num_cols, d, dtype)
    row_ids = torch.arange(num_cols, device=DEVICE)
    if rectangular:
        row_ids = torch.randperm(num_cols, device=DEVICE)[:37]
    assert_primitives_match(zc[row_ids], zc, row_ids, 1.0 / temperature, dtype)
    assert launched
