"""pytest hooks and fixtures of the loss benchmarks; the harness itself is fastclr/bench/harness.py.

    pytest bench/ --benchmark-only            timings at this device's sizes, results saved as
                                              bench/results/<device-slug>/<UTC time>.json
    pytest tests bench --benchmark-disable    (CI) every case runs once at a tiny size: the same
                                              value and gradient checks, no timing, nothing saved

Without --benchmark-only, this conftest switches timing off itself (as --benchmark-disable would).
Sizes, the correctness gate and the memory probe: see the harness's docstring.
"""

from pathlib import Path

import pytest
import torch

from fastclr.bench import impls, results
from fastclr.bench.harness import SESSION, BenchSession
from fastclr.bench.settings import MIB, BudgetCase, LossCase, int_list, str_list

RESULTS_DIR = Path(__file__).parent / "results"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastclr-bench", "fastclr loss benchmarks (bench/)")
    group.addoption("--bench-max-rows", type=int, help="largest 2N to time (default: all)")
    group.addoption("--bench-rows", type=int_list, help="2N values to time, e.g. 1024,4096")
    group.addoption("--bench-dims", type=int_list, help="D values to time, e.g. 128,2048")
    group.addoption("--bench-dtypes", type=str_list, help="e.g. bfloat16,float16,float32")
    group.addoption(
        "--bench-impls", type=str_list, help="only these implementations (default: all)"
    )
    group.addoption(
        "--bench-budget-mib",
        help="memory budgets of the largest-batch search, comma-separated MiB or 'device' (all "
        "the device's memory), e.g. 1024,device (default: 512 on CPU, 8192 on GPU)",
    )
    group.addoption(
        "--bench-budget-max-rows",
        type=int,
        help="largest 2N the budget search tries (default: 8192 on CPU, 1048576 on GPU)",
    )
    group.addoption(
        "--bench-max-call-s",
        type=float,
        default=10.0,
        help="once one call takes longer, larger sizes of that implementation are skipped (10)",
    )
    group.addoption(
        "--bench-target-s", type=float, help="seconds spent timing one case (1 on GPU, 2 on CPU)"
    )
    group.addoption(
        "--bench-deadline-s",
        type=float,
        help="cases that would start later than this after the session began are recorded as "
        "skipped (default: none)",
    )
    group.addoption("--bench-results", type=Path, help=f"results folder (default {RESULTS_DIR})")
    group.addoption("--bench-prefix", help="results file name prefix (default: none)")
    group.addoption("--bench-seed", type=int, help="session seed of the inputs (default: random)")
    group.addoption(
        "--bench-threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 gives steadier CPU numbers on a "
        "machine that other jobs share)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Runs before pytest-benchmark reads its options (its pytest_configure is trylast).
    if not config.getoption("benchmark_only", False):
        config.option.benchmark_disable = True  # checks only: each benchmark body runs once
    threads = config.getoption("bench_threads", None)
    if threads:
        torch.set_num_threads(threads)
    config.stash[SESSION] = BenchSession(config, RESULTS_DIR)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash[SESSION].settings

    def chosen(names: list[str]) -> list[str]:
        return [n for n in names if settings.impls is None or n in settings.impls]

    loss_impls = chosen([*impls.loss_impl_names(), impls.FLOOR])
    grids = {
        "loss_case": (settings.grid, loss_impls),
        "peer_case": (settings.peer_grid, chosen(impls.peer_impl_names())),
    }
    for name, (grid, names) in grids.items():
        if name in metafunc.fixturenames:
            cases = [
                LossCase(impl, mode, rows, dim, dtype)
                for rows, dim, dtype in grid
                for impl in names
                for mode in impls.MODES
            ]
            metafunc.parametrize(name, cases, ids=[c.id for c in cases])
    budgets = {
        "budget_case": chosen(impls.loss_impl_names()),
        "peer_budget_case": chosen(impls.peer_impl_names()),
    }
    for name, names in budgets.items():
        if name in metafunc.fixturenames:
            cases = [
                BudgetCase(impl, settings.budget_dim, dt, budget)
                for dt in settings.budget_dtypes
                for impl in names
                for budget in sorted(settings.budgets)
            ]
            if not settings.full:  # CI: no compile in the worker (~20 s); the loss suite checks it
                cases = [c for c in cases if c.impl != impls.COMPILED]
            metafunc.parametrize(name, cases, ids=[c.id for c in cases])


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SESSION].settings
    rows = sorted({c[0] for c in settings.grid})
    kind = "timing (--benchmark-only)" if settings.full else "checks only (timing disabled)"
    return [
        f"fastclr bench: {kind} on {settings.device}, 2N {rows[0]}..{rows[-1]}, "
        "budgets " + ", ".join(f"{b // MIB} MiB" for b in settings.budgets)
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bench = session.config.stash.get(SESSION, None)
    if bench is not None:
        bench.finish()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    bench = config.stash.get(SESSION, None)
    if bench is not None and bench.saved_to is not None:
        terminalreporter.write_line(f"fastclr bench: results saved to {bench.saved_to}")


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config) -> BenchSession:
    """The session's harness: inputs, oracle, checks, memory, timing and the results it records."""
    return pytestconfig.stash[SESSION]


@pytest.fixture(scope="module")
def records(request: pytest.FixtureRequest):
    """The records of a suite module (train, data), written by a --benchmark-only run as
    <results>/<device>/<module.RESULTS_PREFIX><time>.json with schema module.SCHEMA and the
    environment module.results_env() returns."""
    collected: list[dict] = []
    yield collected
    if not request.config.getoption("benchmark_only", False) or not collected:
        return
    module = request.module
    env = module.results_env()
    root = request.config.getoption("bench_results", None) or RESULTS_DIR
    path = results.results_path(root, env, prefix=module.RESULTS_PREFIX)
    results.write(path, module.SCHEMA, env, collected)
