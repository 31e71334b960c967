"""Stage `gpu-tests`: `pytest -m gpu tests/`, the kernels' correctness on this GPU. The measuring
stages run only after it passes: a fast kernel that is wrong is worthless."""

import re

from fastclr.bench.acceptance.context import Context
from fastclr.bench.acceptance.process import run_pytest

# On the CPU (--dry-run) every GPU test skips; collecting only the files that hold GPU tests keeps
# the dry run short while still running the stage's command, parsing and gate.
DRY_RUN_FILES = ("tests/test_triton_backend.py", "tests/test_cuda_backend.py")
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


class GpuTestsError(RuntimeError):
    """The GPU tests did not pass: the message holds pytest's summary lines."""


def run(ctx: Context) -> dict:
    paths = list(DRY_RUN_FILES) if ctx.dry_run else ["tests"]
    log = ctx.records_dir / "gpu-tests.log"
    done = run_pytest(["-m", "gpu", "-q", "-rfE", *paths], ctx.repo, log, ctx.sizes.stage_timeout_s)
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
            f"pytest -m gpu did not finish in {ctx.sizes.stage_timeout_s:g} s (log: {log})"
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
