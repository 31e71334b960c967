"""One doubling search answers several memory budgets (fastclr/bench/memory.py BudgetSearch)."""

from fastclr.bench.memory import BudgetSearch

MIB = 2**20


def search_over(peaks: dict[int, int | None], budget: int, slow_from: int | None = None):
    """A search over 2N = 256, 512, ... whose peak at each size is `peaks[rows]` (None: OOM)."""

    def measure(rows: int) -> tuple[int | None, float, str]:
        if peaks[rows] is None:
            return None, 0.0, "out of memory"
        return peaks[rows], 0.1, "time" if slow_from is not None and rows >= slow_from else ""

    search = BudgetSearch(budget)
    search.run(sorted(peaks), measure)
    return search


def test_smaller_budgets_read_from_one_search() -> None:
    peaks = {256: 3 * MIB, 512: 9 * MIB, 1024: 40 * MIB, 2048: None, 4096: 1}
    search = search_over(peaks, 1024 * MIB)
    assert (search.largest_rows, search.limited_by) == (1024, "out of memory")
    assert search.within(1024 * MIB) == (1024, "out of memory", 40 * MIB)
    assert search.within(10 * MIB) == (512, "budget", 9 * MIB)
    assert search.within(9 * MIB) == (512, "budget", 9 * MIB)  # a peak equal to the budget fits
    assert search.within(2 * MIB) == (None, "budget", None)


def test_cap_and_time_limits_carry_over() -> None:
    peaks = {256: 1 * MIB, 512: 2 * MIB, 1024: 3 * MIB}
    assert search_over(peaks, 64 * MIB).within(8 * MIB) == (1024, "cap", 3 * MIB)
    timed = search_over(peaks, 64 * MIB, slow_from=512)
    assert timed.within(64 * MIB) == (512, "time", 2 * MIB)
    assert timed.within(1 * MIB) == (256, "budget", 1 * MIB)
