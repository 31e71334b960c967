"""sinkhorn_knopp against a float64 transcription of SwAV's distributed_sinkhorn (one process),
its marginals, dtypes, overflow safety, bad input, and 2 gloo ranks against one process on the
concatenated batch. Fresh random inputs; the seed is printed in every failure."""

import os

import pytest
import torch
import torch.distributed as dist

from fastclr.errors import UsageError
from fastclr.ops import sinkhorn_knopp
from tests.rank_checks import run_on_ranks

SEED = int.from_bytes(os.urandom(4), "little")
WORLD = 2


def swav_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """facebookresearch/swav main_swav.py distributed_sinkhorn, one process, as written there."""
    q = torch.exp(scores / epsilon).t()
    b, k = q.shape[1], q.shape[0]
    q /= torch.sum(q)
    for _ in range(iterations):
        q /= torch.sum(q, dim=1, keepdim=True)
        q /= k
        q /= torch.sum(q, dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def _cosine_scores(b: int, k: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """SwAV's scores: normalized features [b, 16] against normalized prototypes [k, 16]."""
    feats = torch.nn.functional.normalize(torch.randn(b, 16, generator=gen, dtype=dtype), dim=1)
    protos = torch.nn.functional.normalize(torch.randn(k, 16, generator=gen, dtype=dtype), dim=1)
    return feats @ protos.t()


@pytest.mark.parametrize(("b", "k"), [(2, 2), (7, 3), (5, 40), (33, 17), (64, 100)])
@pytest.mark.parametrize(("epsilon", "iterations"), [(0.05, 3), (0.2, 1), (0.03, 10)])
def test_matches_swav_in_float64(b, k, epsilon, iterations):
    gen = torch.Generator().manual_seed(SEED)
    scores = _cosine_scores(b, k, gen)
    expected = swav_sinkhorn(scores, epsilon, iterations)
    got = sinkhorn_knopp(scores, epsilon, iterations)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-14, msg=f"seed {SEED}")
    got32 = sinkhorn_knopp(scores.float(), epsilon, iterations)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=1e-4, atol=1e-6, msg=f"seed {SEED}")


@pytest.mark.parametrize(("b", "k"), [(3, 2), (40, 7), (12, 30)])
def test_marginals(b, k):
    """Rows (samples) sum to 1 after any iteration count; many iterations also balance the
    prototypes: each gets B/K of the mass."""
    gen = torch.Generator().manual_seed(SEED)
    scores = _cosine_scores(b, k, gen, torch.float32)
    codes = sinkhorn_knopp(scores)
    assert (codes >= 0).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(b), msg=f"seed {SEED}")
    balanced = sinkhorn_knopp(scores.double(), epsilon=0.1, iterations=500)
    torch.testing.assert_close(balanced.sum(1), torch.ones(b, dtype=torch.float64))
    torch.testing.assert_close(
        balanced.sum(0), torch.full((k,), b / k, dtype=torch.float64), rtol=1e-6, atol=1e-8
    )


def test_large_scores_do_not_overflow():
    """Scores up to 5 (S / epsilon = 100) overflow SwAV's fp32 exp; the max-shifted form gives
    the fp64 codes."""
    gen = torch.Generator().manual_seed(SEED)
    scores = 4 + _cosine_scores(16, 9, gen)
    assert not torch.isfinite(swav_sinkhorn(scores.float(), 0.05, 3)).all()
    got = sinkhorn_knopp(scores.float())
    torch.testing.assert_close(got.double(), swav_sinkhorn(scores, 0.05, 3), rtol=1e-4, atol=1e-6)


def test_scores_beyond_the_float32_range_raise_and_float64_takes_them():
    """Cosines x 10 with a perfect match (10) and a prototype opposite to every sample (-10)
    span 400 epsilon: float32 cannot hold the codes, float64 can."""
    gen = torch.Generator().manual_seed(SEED)
    scores = 10 * _cosine_scores(16, 9, gen)
    scores[3, 1], scores[:, 0] = 10.0, -10.0
    with pytest.raises(UsageError, match="float64 scores"):
        sinkhorn_knopp(scores.float())
    codes = sinkhorn_knopp(scores)
    torch.testing.assert_close(codes, swav_sinkhorn(scores, 0.05, 3), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_scores_give_float32_codes_without_grad(dtype):
    gen = torch.Generator().manual_seed(SEED)
    scores = _cosine_scores(10, 6, gen, torch.float32).to(dtype).requires_grad_()
    codes = sinkhorn_knopp(scores)
    assert codes.dtype == torch.float32 and not codes.requires_grad
    torch.testing.assert_close(codes, sinkhorn_knopp(scores.detach().float()))


@pytest.mark.parametrize(
    ("scores", "kwargs", "match"),
    [
        (torch.randn(1, 5), {}, "B=1"),
        (torch.randn(4, 1), {}, "K=1"),
        (torch.randn(8), {}, r"\[B, K\]"),
        (torch.ones(4, 3, dtype=torch.int64), {}, "dtype"),
        (torch.randn(4, 3), {"epsilon": 0.0}, "epsilon"),
        (torch.randn(4, 3), {"iterations": 0}, "iterations"),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), {}, "NaN or infinite"),
        (torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), {}, "NaN or infinite"),
        (torch.tensor([[1.0, 0.9], [-9.0, -9.5], [0.5, 0.2]]), {}, "underflow"),
    ],
)
def test_bad_input_is_named(scores, kwargs, match):
    with pytest.raises(UsageError, match=match) as error:
        sinkhorn_knopp(scores, **kwargs)
    assert "\n" not in str(error.value)


def test_distributed_without_process_group_equals_one_process():
    scores = torch.randn(6, 4)
    assert torch.equal(sinkhorn_knopp(scores, distributed=True), sinkhorn_knopp(scores))


def check_matches_concatenated(seed: int, rank: int, rows: tuple[int, ...], dtype) -> None:
    gen = torch.Generator().manual_seed(seed)
    scores = _cosine_scores(sum(rows), 11, gen, dtype)
    start = sum(rows[:rank])
    mine = scores[start : start + rows[rank]]
    expected = sinkhorn_knopp(scores)[start : start + rows[rank]]
    got = sinkhorn_knopp(mine, distributed=True)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)


def check_bad_rank_raises_on_every_rank(seed: int, rank: int, bad_row: list, match: str) -> None:
    """Only rank 1 holds the bad sample; both ranks must raise the same error."""
    scores = torch.tensor([[1.0, 0.9], [0.5, 0.2]])
    if rank == 1:
        scores = torch.tensor([bad_row, [0.1, 0.3]])
    with pytest.raises(UsageError, match=match):
        sinkhorn_knopp(scores, distributed=True)
    dist.barrier()  # a rank that did not raise would have left the group here


CHECKS = {
    "equal-f64": (check_matches_concatenated, ((5, 5), torch.float64)),
    "unequal-f64": (check_matches_concatenated, ((3, 8), torch.float64)),
    "one-row-each-f32": (check_matches_concatenated, ((1, 1), torch.float32)),
    "underflow": (check_bad_rank_raises_on_every_rank, ([-9.0, -9.5], "underflow")),
    "nan": (check_bad_rank_raises_on_every_rank, ([0.0, float("nan")], "NaN or infinite")),
    "inf": (check_bad_rank_raises_on_every_rank, ([0.0, float("inf")], "NaN or infinite")),
}


@pytest.fixture(scope="module")
def results() -> list[dict[str, str | None]]:
    return run_on_ranks(CHECKS, seed=SEED, world=WORLD)


@pytest.mark.parametrize("case", list(CHECKS))
def test_two_ranks_equal_one_process(results, case):
    for rank, outcome in enumerate(results):
        assert outcome[case] is None, f"rank {rank}, seed {SEED}:\n{outcome[case]}"
