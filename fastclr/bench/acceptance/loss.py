"""Stages `loss-bf16`, `loss-fp16`, `loss-fp32`, `family` and `budget`: the loss benchmarks of
bench/ (the harness in fastclr/bench/harness.py: every case checked before it is timed, CUDA event
medians with spread, peak extra memory) run in a pytest subprocess with the acceptance grid.
`family` runs bench/test_bench_family.py: the loss family (sup_con, DCL, DCLW, CLIP) against the
peers' implementations; a peer that does not import is recorded as unavailable with the reason.
Both rewrite their results file after every case, so a stage cut short keeps what it measured.
"""

import json
import time
from collections import Counter
from pathlib import Path

from fastclr.bench.acceptance.context import Context
from fastclr.bench.acceptance.process import run_pytest

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class LossStageError(RuntimeError):
    """The pytest run failed (a case disagreed with the oracle, or it crashed or timed out)."""


LOSS_SUITE, FAMILY_SUITE = "bench/test_bench_loss.py", "bench/test_bench_family.py"


def bench_args(ctx: Context, suite: str, prefix: str, deadline_s: float) -> list[str]:
    return [
        suite,
        "--benchmark-only",
        "-q",
        "-rf",
        f"--bench-results={ctx.results_dir.resolve()}",
        f"--bench-prefix={prefix}",
        f"--bench-deadline-s={deadline_s:g}",
    ]


def run_bench(
    ctx: Context,
    name: str,
    args: list[str],
    suite: str = LOSS_SUITE,
    bench_prefix: str | None = None,
    deadline_s: float | None = None,
) -> dict:
    """Run the suite; return what its results file (<name>-<time>.json) holds, by status, and the
    reasons of the cases not measured. Raises LossStageError (with the results kept on disk) when
    pytest failed. bench_prefix: --bench-prefix, when the suite adds to it (default <name>-);
    deadline_s: default the stage deadline."""
    prefix = f"{name}-"
    started = time.time()
    log = ctx.records_dir / f"{name}.log"
    deadline_s = ctx.sizes.stage_deadline_s if deadline_s is None else deadline_s
    bench_prefix = prefix if bench_prefix is None else bench_prefix
    args = bench_args(ctx, suite, bench_prefix, deadline_s) + args
    done = run_pytest(args, ctx.repo, log, ctx.sizes.stage_timeout_s)
    written = sorted(
        p for p in ctx.device_dir.glob(f"{prefix}*.json") if p.stat().st_mtime >= started - 1
    )
    records = json.loads(written[-1].read_text())["results"] if written else []
    result = {
        "results_file": str(written[-1]) if written else None,
        "log": str(log),
        "statuses": dict(Counter(r["status"] for r in records)),
        "not_measured": sorted(
            {r["reason"] for r in records if r["status"] != "ok" and r.get("reason")}
        ),
        "returncode": done.returncode,
    }
    if done.returncode is None:
        raise LossStageError(
            f"killed after {ctx.sizes.stage_timeout_s:g} s; {len(records)} cases kept in "
            f"{result['results_file']} (log: {log})"
        )
    if done.returncode != 0:
        failed = [line for line in done.tail(60).splitlines() if line.startswith("FAILED")]
        raise LossStageError(
            f"pytest exit {done.returncode}; {len(records)} cases kept (log: {log})\n"
            + "\n".join(failed[:10])
        )
    return result


def run_grid(ctx: Context, short: str) -> dict:
    sizes = ctx.sizes
    return run_bench(
        ctx,
        f"loss-{short}",
        [
            "-k",
            "test_loss",
            "--bench-rows=" + ",".join(map(str, sizes.loss_rows)),
            "--bench-dims=" + ",".join(map(str, sizes.loss_dims)),
            f"--bench-dtypes={DTYPES[short]}",
            "--bench-impls=" + ",".join(sizes.loss_impls),
            f"--bench-target-s={sizes.loss_target_s:g}",
            f"--bench-max-call-s={sizes.loss_max_call_s:g}",
        ],
    )


def run_family(ctx: Context) -> dict:
    """fastclr's loss family (default backend) against the peers at the family sizes; the suite
    writes <results>/<device>/family-<time>.json itself (so --bench-prefix stays empty)."""
    sizes = ctx.sizes
    return run_bench(
        ctx,
        "family",
        [
            "--bench-impls=" + ",".join(sizes.family_members),
            "--bench-rows=" + ",".join(map(str, sizes.family_rows)),
            "--bench-dtypes=" + ",".join(sizes.family_dtypes),
            f"--bench-target-s={sizes.loss_target_s:g}",
        ],
        suite=FAMILY_SUITE,
        bench_prefix="",
        deadline_s=sizes.family_deadline_s,
    )


def run_budget(ctx: Context) -> dict:
    sizes = ctx.sizes
    return run_bench(
        ctx,
        "budget",
        [
            "-k",
            "test_largest_batch_in_budget",
            f"--bench-budget-mib={sizes.budget_mib}",
            f"--bench-budget-max-rows={sizes.budget_max_rows}",
            f"--bench-dims={sizes.loss_dims[0]}",
            "--bench-dtypes=" + ",".join(sizes.budget_dtypes),
            "--bench-impls=" + ",".join(sizes.budget_impls),
            "--bench-max-call-s=10",
        ],
    )


def summary(result: dict) -> str:
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(result.get("statuses", {}).items()))
    name = Path(result["results_file"]).name if result.get("results_file") else "no file"
    missing = result.get("not_measured") or []
    why = f" (not measured: {'; '.join(missing)})" if missing else ""
    return f"{statuses or 'no cases'} -> {name}{why}"
