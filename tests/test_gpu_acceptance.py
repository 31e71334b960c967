"""`fastclr bench gpu`: the dry run (every stage, writer and the report on the CPU at tiny sizes,
through the real entry point), resuming, no GPU without --dry-run, and a failing stage or failing
GPU tests recorded while the run goes on."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastclr.bench.acceptance import STAGE_NAMES, gpu_tests, runner
from fastclr.bench.acceptance.context import (
    DRY_SIZES,
    GPU_SIZES,
    LEASE_SIZES,
    Context,
    make_context,
)
from fastclr.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def fastclr_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastclr.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.mark.slow
def test_dry_run_runs_every_stage_then_resumes(tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = fastclr_cli("bench", "gpu", "--dry-run", "--results", str(results))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = {p.stem: json.loads(p.read_text()) for p in results.glob("*/acceptance/*.json")}
    assert set(records) == set(STAGE_NAMES)
    for name, record in records.items():
        allowed = ("ok", "skipped") if name == "data" else ("ok",)  # data: when DALI is missing
        assert record["status"] in allowed, (name, record.get("error"))
    for name in ("loss-bf16", "loss-fp16", "loss-fp32", "family", "budget"):
        assert Path(records[name]["result"]["results_file"]).is_file()
    family = json.loads(Path(records["family"]["result"]["results_file"]).read_text())
    assert family["schema"] == "fastclr-bench-family/1"
    assert {r["member"] for r in family["results"]} == set(DRY_SIZES.family_members)
    for r in family["results"]:  # measured, or why not (a peer missing here) in the stage record
        assert r["status"] in ("ok", "unavailable"), r
        if r["status"] == "unavailable":
            assert r["reason"] in records["family"]["result"]["not_measured"]
    report = (results / "REPORT.md").read_text()
    assert "GPU acceptance run (`fastclr bench gpu`) — DRY RUN" in report
    assert "Largest batch whose forward+backward fits 1 MiB" in report
    assert "step: synthetic, fused loss, eager, channels_last, bf16" in report
    assert "### Loss family against the peers (forward+backward)" in report
    pngs = list((results / "plots").glob("*.png"))
    assert any(p.name.endswith("-throughput.png") for p in pngs) and len(pngs) >= 5
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for name in STAGE_NAMES:  # the one-screen summary names every stage
        assert f"  {name} " in done.stdout
    # Resuming: finished stages are kept, not rerun; the report is regenerated.
    again = fastclr_cli("bench", "gpu", "--dry-run", "--results", str(results))
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count(": kept (--force reruns)") == len(STAGE_NAMES) - 1
    assert "[report] running" in again.stdout


def test_no_gpu_without_dry_run() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = fastclr_cli("bench", "gpu", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "fastclr bench: error: no CUDA device visible (torch.cuda.is_available() is False): run "
        "it on a GPU machine, or pass --dry-run to check every stage on the CPU at tiny sizes"
    ]


def test_unknown_stage_is_refused() -> None:
    done = fastclr_cli("bench", "gpu", "--dry-run", "--stage", "los", timeout=120)
    assert done.returncode == 2 and "invalid choice: 'los'" in done.stderr


def test_stage_names_are_the_runner_stages() -> None:
    assert runner.NAMES == STAGE_NAMES


def fake_stages(monkeypatch: pytest.MonkeyPatch, behaviour: dict) -> list[str]:
    """Replace every stage's work by `behaviour[name]` (default: return {}); returns the call log."""
    calls: list[str] = []

    def make(name: str):
        def run(ctx: Context) -> dict:
            calls.append(name)
            if name in behaviour:
                raise behaviour[name]
            return {"value": name}

        return run

    stages = tuple(
        runner.Stage(s.name, make(s.name), lambda result: str(result), s.measures, s.estimate_s)
        for s in runner.STAGES
    )
    monkeypatch.setattr(runner, "STAGES", stages)
    return calls


def context(tmp_path: Path) -> Context:
    return Context(True, torch.device("cpu"), tmp_path, REPO, DRY_SIZES)


def test_a_failing_stage_is_recorded_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_stages(monkeypatch, {"loss-fp16": RuntimeError("kernel launch failed")})
    ctx = context(tmp_path)
    lines: list[str] = []
    assert runner.run(ctx, None, force=False, echo=lines.append) == 1
    assert calls == list(STAGE_NAMES)  # every stage after the failure still ran
    failed = json.loads((ctx.records_dir / "loss-fp16.json").read_text())
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: kernel launch failed" and failed["traceback"]
    kept = json.loads((ctx.records_dir / "loss-bf16.json").read_text())
    assert kept["status"] == "ok" and kept["result"] == {"value": "loss-bf16"}
    # Resume: only the failed stage and the report run again.
    calls.clear()
    assert runner.run(ctx, None, force=False, echo=lines.append) == 1
    assert calls == ["loss-fp16", "report"]


def test_failing_gpu_tests_block_the_measurements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_stages(monkeypatch, {"gpu-tests": RuntimeError("2 failed, 40 passed")})
    ctx = context(tmp_path)
    lines: list[str] = []
    assert runner.run(ctx, None, force=False, echo=lines.append) == 1
    assert calls == ["env", "gpu-tests", "report"]
    for name in ("loss-bf16", "budget", "train", "data"):
        record = json.loads((ctx.records_dir / f"{name}.json").read_text())
        assert record["status"] == "blocked" and "GPU tests failed" in record["error"]
    assert any("gpu-tests" in line and "failed" in line for line in lines)


def test_no_gate_measures_after_failing_gpu_tests_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_stages(monkeypatch, {"gpu-tests": RuntimeError("2 failed, 40 passed")})
    ctx = context(tmp_path)
    assert runner.run(ctx, None, force=False, echo=[].append, gate=False) == 1
    assert calls == list(STAGE_NAMES)
    for name in ("loss-bf16", "budget", "train"):
        record = json.loads((ctx.records_dir / f"{name}.json").read_text())
        assert record["status"] == "ok" and "GPU tests failed" in record["ungated"]
    assert "ungated" not in json.loads((ctx.records_dir / "env.json").read_text())
    # A named measuring stage does not bring the failed GPU tests back when not gated.
    calls.clear()
    assert runner.run(ctx, ["budget"], force=True, echo=[].append, gate=False) == 0
    assert calls == ["budget", "report"]


def test_lease_sizes_are_a_part_of_the_full_grid() -> None:
    assert set(LEASE_SIZES.loss_rows) <= set(GPU_SIZES.loss_rows)
    assert set(LEASE_SIZES.loss_dims) <= set(GPU_SIZES.loss_dims)
    assert set(LEASE_SIZES.loss_impls) <= set(GPU_SIZES.loss_impls)
    assert set(LEASE_SIZES.family_rows) <= set(GPU_SIZES.family_rows)
    assert not LEASE_SIZES.compile_model and LEASE_SIZES.compile_skip_reason
    with pytest.raises(UsageError, match="--lease and --dry-run"):
        make_context(True, None, REPO, lease=True)


def test_gpu_tests_use_xdist_workers_only_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_tests.os, "cpu_count", lambda: 16)
    installed = importlib.util.find_spec("xdist") is not None
    assert gpu_tests.xdist_args(8) == (["-n", "8"] if installed else [])
    assert gpu_tests.xdist_args(1) == []
    monkeypatch.setattr(gpu_tests.importlib.util, "find_spec", lambda name: None)
    assert gpu_tests.xdist_args(8) == []


def test_a_named_stage_brings_the_gpu_tests_and_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_stages(monkeypatch, {})
    assert runner.run(context(tmp_path), ["train"], force=False, echo=lambda line: None) == 0
    assert calls == ["gpu-tests", "train", "report"]
    calls.clear()
    assert runner.run(context(tmp_path), ["train"], force=True, echo=lambda line: None) == 0
    assert calls == ["train", "report"]  # the GPU tests passed here already
