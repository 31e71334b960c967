"""Runs the acceptance stages in order, resumably, and prints the one-screen summary.

Each stage's outcome is bench/results/<device>/acceptance/<stage>.json:
    {"schema": "fastclr-acceptance/1", "stage", "status", "started", "seconds", "dry_run",
     "result" (what the stage returned) | "error" and "traceback"}
status: ok | skipped (with the reason: DALI missing) | failed | blocked (gpu-tests did not pass).
A stage whose record is ok or skipped is not run again unless --force; `report` always runs.
"""

import datetime
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from fastclr.bench import results
from fastclr.bench.acceptance import data, environment_stage, gpu_tests, loss, report_stage, train
from fastclr.bench.acceptance.context import SCHEMA, Context
from fastclr.errors import UsageError


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], dict]
    summary: Callable[[dict], str]
    measures: bool  # needs the GPU tests to have passed
    estimate_s: int  # ESTIMATED duration on an H100 (no measurement yet): planning only


STAGES = (
    Stage("env", environment_stage.run, environment_stage.summary, False, 5),
    Stage("gpu-tests", gpu_tests.run, gpu_tests.summary, False, 90),
    Stage("loss-bf16", lambda ctx: loss.run_grid(ctx, "bf16"), loss.summary, True, 110),
    Stage("loss-fp16", lambda ctx: loss.run_grid(ctx, "fp16"), loss.summary, True, 110),
    Stage("loss-fp32", lambda ctx: loss.run_grid(ctx, "fp32"), loss.summary, True, 110),
    Stage("family", loss.run_family, loss.summary, True, 90),
    Stage("budget", loss.run_budget, loss.summary, True, 120),
    Stage("train", train.run, train.summary, True, 120),
    Stage("data", data.run, data.summary, True, 15),
    Stage("report", report_stage.run, report_stage.summary, False, 10),
)
NAMES = tuple(stage.name for stage in STAGES)
DONE = ("ok", "skipped")
SKIPS = (data.DaliUnavailableError,)


def read_record(ctx: Context, name: str) -> dict | None:
    path = ctx.records_dir / f"{name}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # absent or cut short: the stage runs again
    return record if isinstance(record, dict) and record.get("schema") == SCHEMA else None


def run_stage(ctx: Context, stage: Stage, **notes: str) -> dict:
    """Run one stage and write its record; notes (e.g. ungated=why) go into the record."""
    record = {
        "schema": SCHEMA,
        "stage": stage.name,
        "dry_run": ctx.dry_run,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **notes,
    }
    start = time.monotonic()
    try:
        record.update(status="ok", result=stage.run(ctx))
    except SKIPS as err:
        record.update(status="skipped", error=str(err))
    except Exception as err:  # recorded; the run goes on with the next stage
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        record["traceback"] = traceback.format_exc(limit=-6)
    record["seconds"] = time.monotonic() - start
    results.write_json(ctx.records_dir / f"{stage.name}.json", record)
    return record


def selected_stages(names: list[str] | None, ctx: Context, gate: bool = True) -> list[Stage]:
    """The stages to consider, in run order: all, or the named ones, plus gpu-tests when a
    measuring stage is named and the GPU tests have not passed here (unless not gated), plus the
    report."""
    if not names:
        return list(STAGES)
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise UsageError(f"--stage {unknown[0]!r} is not a stage; choose from {', '.join(NAMES)}")
    wanted = set(names) | {"report"}
    passed = (read_record(ctx, "gpu-tests") or {}).get("status") == "ok"
    if gate and not passed and any(s.measures for s in STAGES if s.name in wanted):
        wanted.add("gpu-tests")
    return [s for s in STAGES if s.name in wanted]


def run(
    ctx: Context,
    names: list[str] | None,
    force: bool,
    echo: Callable[[str], None],
    gate: bool = True,
) -> int:
    """Run the stages; 0 when every stage is ok or skipped, 1 otherwise. gate=False (--no-gate):
    the measuring stages run even after the GPU tests failed, and their records say so (each
    loss case is still checked against the oracle before it is timed)."""
    ctx.records_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[tuple[Stage, dict, str]] = []
    tests_ok = None
    for stage in selected_stages(names, ctx, gate):
        old = read_record(ctx, stage.name)
        if stage.name != "report" and not force and old and old["status"] in DONE:
            echo(
                f"[{stage.name}] done at {old['started']} ({old['status']}): kept (--force reruns)"
            )
            record, how = old, "kept"
        elif stage.measures and tests_ok is False and gate:
            record = {
                "schema": SCHEMA,
                "stage": stage.name,
                "status": "blocked",
                "dry_run": ctx.dry_run,
                "started": None,
                "seconds": 0.0,
                "error": "not run: the GPU tests failed (see gpu-tests)",
            }
            results.write_json(ctx.records_dir / f"{stage.name}.json", record)
            how = "blocked"
        else:
            echo(f"[{stage.name}] running (estimated {stage.estimate_s} s on an H100) ...")
            ungated = stage.measures and tests_ok is False
            notes = (
                {"ungated": "measured with --no-gate after the GPU tests failed"} if ungated else {}
            )
            record, how = run_stage(ctx, stage, **notes), "ran"
        if stage.name == "gpu-tests":
            tests_ok = record["status"] == "ok"
        outcomes.append((stage, record, how))
        if record["status"] == "failed":
            echo(f"[{stage.name}] FAILED: {record['error']}")
    for line in summary_lines(ctx, outcomes):
        echo(line)
    return 0 if all(record["status"] in DONE for _, record, _ in outcomes) else 1


def summary_lines(ctx: Context, outcomes: list[tuple[Stage, dict, str]]) -> list[str]:
    """The one-screen summary: one line per stage, then where everything is."""
    kind = "DRY RUN on the CPU at tiny sizes (no figure here means anything)" if ctx.dry_run else ""
    lines = ["", f"fastclr bench gpu: {ctx.device_dir.name} {kind}".rstrip(), ""]
    for stage, record, how in outcomes:
        if record["status"] == "ok":
            try:
                text = stage.summary(record["result"])
            except (KeyError, TypeError) as err:  # an old record's shape: say so, keep going
                text = f"(summary unavailable: {err})"
        else:
            text = record.get("error", "").splitlines()[0] if record.get("error") else ""
        seconds = f"{record.get('seconds') or 0:6.0f} s"
        lines.append(f"  {stage.name:<10} {record['status']:<8} {seconds} {how:<7} {text}"[:160])
    lines += ["", f"stage records: {ctx.records_dir}", f"report: {ctx.results_dir / 'REPORT.md'}"]
    return lines
