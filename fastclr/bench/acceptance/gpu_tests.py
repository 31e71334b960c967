"""Stage `gpu-tests`: `pytest -m gpu tests/`, the kernels' correctness on this GPU. The measuring
stages run only after it passes: a fast kernel that is wrong is worthless."""

import importlib.util
import os
import re

from fastclr.bench.acceptance.context import Context
from fastclr.bench.acceptance.process import run_pytest

# On the CPU (--dry-run) every GPU test skips; collecting only the files that hold GPU tests keeps
# the dry run short while still running the stage's command, parsing and gate.
DRY_RUN_FILES = ("tests/test_triton_backend.py", "tests/test_cuda_backend.py")
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


class GpuTestsError(RuntimeError):
    """The GPU tests did not pass: the message holds pytest's summary lines."""


def xdist_args(wanted: int) -> list[str]:
    """`-n W` when pytest-xdist is installed and W > 1: the GPU tests' time is mostly compiling
    kernels (Triton's JIT, the CUDA extension once), which parallelizes over CPU cores; the
    workers share Triton's and torch's on-disk caches (the extension builds once, under a lock)."""
    workers = min(wanted, os.cpu_count() or 1)
    if workers <= 1 or importlib.util.find_spec("xdist") is None:
        return []
    return ["-n", str(workers)]


def run(ctx: Context) -> dict:
    paths = list(DRY_RUN_FILES) if ctx.dry_run else ["tests"]
    log = ctx.records_dir / "gpu-tests.log"
    args = ["-m", "gpu", "-q", "-rfE", *xdist_args(ctx.sizes.gpu_test_workers), *paths]
    done = run_pytest(args, ctx.repo, log, ctx.sizes.gpu_tests_timeout_s)
    tail = done.tail(40)
    summary = next((line for line in reversed(tail.splitlines()) if COUNTS.search(line)), "")
    counts = {kind: int(n) for n, kind in COUNTS.findall(summary)}
    result = {
        "returncode": done.returncode,
        "counts": counts,
        "log": str(log),
        "seconds": done.seconds,
    }
    if done.returncode is None:
        raise GpuTestsError(
            f"pytest -m gpu did not finish in {ctx.sizes.gpu_tests_timeout_s:g} s (log: {log})"
        )
    if done.returncode == 5 or (not ctx.dry_run and counts.get("passed", 0) == 0):
        raise GpuTestsError(
            f"no GPU test ran ({summary.strip() or 'nothing collected'}; log: {log})"
        )
    if done.returncode != 0:
        failures = [line for line in tail.splitlines() if line.startswith(("FAILED", "ERROR"))]
        raise GpuTestsError(
            f"pytest -m gpu: {summary.strip()} (log: {log})\n" + "\n".join(failures[:10])
        )
    return result


def summary(result: dict) -> str:
    counts = result.get("counts", {})
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "no tests"
