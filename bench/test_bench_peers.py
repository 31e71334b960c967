"""Peer libraries side by side with fastclr, on the same inputs in the same run.

lightly's NTXentLoss(temperature, memory_bank_size=0) and pytorch-metric-learning's
NTXentLoss(temperature) on cat(z1, z2) with labels cat(arange(N), arange(N)) both compute the SimCLR
paper's mean loss; each case checks that (value and gradient against the float64 reference) before
timing it. The peers are the optional `bench` extra (pip install "fastclr[bench]"): without them
these tests skip.
"""


def test_peer(benchmark, bench, peer_case) -> None:
    """A peer's forward, or forward+backward, at one size: checked against the oracle, timed."""
    benchmark.group = f"{peer_case.mode} 2N={peer_case.rows} D={peer_case.dim} {peer_case.dtype}"
    bench.measure(benchmark, peer_case, suite="peers")


def test_peer_largest_batch_in_budget(benchmark, bench, peer_budget_case) -> None:
    """Largest 2N whose forward+backward fits the memory budget, for a peer."""
    benchmark.group = f"largest batch in budget D={peer_budget_case.dim} {peer_budget_case.dtype}"
    bench.largest_batch(benchmark, peer_budget_case, suite="budget")
