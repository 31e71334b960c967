"""fastclr's loss backends against the reference, the compiled reference and the matmul floor.

Each case is checked against the oracle before it is timed (see bench/conftest.py); the results
name the device, versions, sizes, dtype, median and spread, TFLOP/s and peak extra memory.
"""

import pytest
import torch

from fastclr.bench import memory

MIB = 2**20


def test_loss(benchmark, bench, loss_case) -> None:
    """Forward, or forward+backward, of one implementation at one size: checked, then timed."""
    benchmark.group = f"{loss_case.mode} 2N={loss_case.rows} D={loss_case.dim} {loss_case.dtype}"
    bench.measure(benchmark, loss_case, suite="loss")


# A budget whose largest size a smaller budget already timed reuses that measurement (no timing).
@pytest.mark.filterwarnings("ignore:Benchmark fixture was not used")
def test_largest_batch_in_budget(benchmark, bench, budget_case) -> None:
    """Largest 2N whose forward+backward fits the memory budget (doubling search), timed there."""
    benchmark.group = f"largest batch in budget D={budget_case.dim} {budget_case.dtype}"
    bench.largest_batch(benchmark, budget_case, suite="budget")


def test_memory_probe_sees_known_buffers(bench) -> None:
    """The peak-memory probe of this device sees two live 32 MiB buffers and not a freed 16 MiB
    one: the memory figures of the benchmarks measure what they claim."""
    if bench.device.type == "cuda":

        def call() -> torch.Tensor:
            freed = torch.ones(16 * MIB // 4, device=bench.device)
            del freed
            a = torch.ones(32 * MIB // 4, device=bench.device)
            b = torch.ones(32 * MIB // 4, device=bench.device)
            return a.sum() + b.sum()

        peak, expected = memory.cuda_peak_bytes(call, bench.device), 64 * MIB
    else:
        reason = memory.rss_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        reply = bench.worker.request({"op": "selftest"})
        peak, expected = reply["peak_bytes"], reply["expected_bytes"]
    assert 0.9 * expected <= peak <= 1.1 * expected + 4 * MIB, (peak, expected)
