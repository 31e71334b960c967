"""`fastclr bench report` on small synthetic results: tables, ratios, budgets, plots, the CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastclr.bench import report
from fastclr.cli.main import main

MIB = 2**20


def env(timestamp: str, device_type: str = "cpu") -> dict:
    return {
        "timestamp": timestamp,
        "device_type": device_type,
        "device": "Test CPU 9000",
        "device_slug": "cpu-test-cpu-9000",
        "cpu": "Test CPU 9000",
        "cpu_threads": 1,
        "load_average": [0.5, 0.5, 0.5],
        "torch": "2.14.1",
        "triton": "3.8.0",
        "fastclr": "0.1.0",
        "lightly": None,
        "pytorch_metric_learning": None,
    }


def timing(impl: str, mode: str, rows: int, median_s: float, peak: int | None, **extra) -> dict:
    return {
        "suite": "loss",
        "impl": impl,
        "mode": mode,
        "rows": rows,
        "dim": 128,
        "dtype": "float32",
        "status": "ok",
        "time": {"median_s": median_s, "iqr_s": median_s / 10, "rounds": 5},
        "peak_bytes": peak,
        "tflops": 6 * rows * rows * 128 / median_s / 1e12,
        "value_rel_err": 1e-7,
        "grad_rel_err": 2e-6,
        "oracle": "float64 reference",
        **extra,
    }


def write_run(folder: Path, name: str, run_env: dict, results: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"schema": report.SCHEMA, "env": run_env, "settings": {}, "results": results}
    (folder / name).write_text(json.dumps(payload))


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    device = root / "cpu-test-cpu-9000"
    write_run(
        device,
        "20260101T000000Z.json",
        env("2026-01-01T00:00:00+00:00"),
        [
            timing("reference", "fwd+bwd", 1024, 0.010, 64 * MIB),
            timing("chunked", "fwd+bwd", 1024, 0.005, 16 * MIB),
            timing("reference", "fwd+bwd", 2048, 0.040, 256 * MIB),
            timing("chunked", "fwd+bwd", 2048, 0.020, 32 * MIB),
            {
                "suite": "loss",
                "impl": "triton",
                "mode": "fwd+bwd",
                "rows": 1024,
                "dim": 128,
                "dtype": "float32",
                "status": "unavailable",
                "reason": "needs a CUDA tensor",
            },
            {
                **timing("chunked", "fwd+bwd", 8192, 0.3, 40 * MIB),
                "suite": "budget",
                "budget_bytes": 512 * MIB,
                "largest_rows": 8192,
                "limited_by": "cap",
            },
            {
                **timing("chunked", "fwd+bwd", 2048, 0.02, 30 * MIB),
                "suite": "budget",
                "budget_bytes": 4 * MIB,
                "largest_rows": 2048,
                "limited_by": "budget",
            },
            {
                **timing("reference", "fwd+bwd", 2048, 0.040, 256 * MIB),
                "suite": "budget",
                "budget_bytes": 512 * MIB,
                "largest_rows": 2048,
                "limited_by": "budget",
            },
            {  # a search the stage's deadline never started: no budget recorded
                "suite": "budget",
                "impl": "triton",
                "mode": "fwd+bwd",
                "rows": 1024,
                "dim": 128,
                "dtype": "float32",
                "status": "deadline",
                "reason": "not started: the run passed its 45 s",
            },
        ],
    )
    # A newer partial run: refreshes reference at 1024, skips chunked at 2048 (must not hide the
    # older measurement), and runs out of memory for the reference at 4096.
    write_run(
        device,
        "20260102T000000Z.json",
        env("2026-01-02T00:00:00+00:00"),
        [
            timing("reference", "fwd+bwd", 1024, 0.020, 64 * MIB),
            {**timing("chunked", "fwd+bwd", 2048, 1.0, None), "status": "too slow"},
            {**timing("reference", "fwd+bwd", 4096, 1.0, None), "status": "out of memory"},
        ],
    )
    (root / "unrelated.json").write_text(json.dumps({"benchmarks": []}))
    return root


def test_tables_ratios_and_statuses(results_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the report must not need it
    outcome = report.generate(results_dir, results_dir / "REPORT.md")
    text = outcome.markdown.read_text()
    assert outcome.plots == [] and "matplotlib is not installed" in outcome.warnings[0]
    assert "Plots: not generated" in text
    assert "**CPU-only figures**" in text
    # newest reference at 1024 (20 ms) against chunked's 5 ms: 4x; at 2048, 40 ms vs 20 ms: 2x
    assert "| 1024 | 20 ms | 5 ms (4×) |" in text
    assert "| 2048 | 40 ms | 20 ms (2×) |" in text
    assert "| 4096 | OOM | — |" in text
    # memory: 64 MiB vs 16 MiB, 256 MiB vs 32 MiB
    assert "| 1024 | 64 MiB | 16 MiB (4×) |" in text
    assert "| 2048 | 256 MiB | 32 MiB (8×) |" in text
    assert "| chunked | float32 | 128 | ≥ 8192 | cap | 40 MiB | 300 ms |" in text
    assert "| reference | float32 | 128 | 2048 | budget | 256 MiB | 40 ms |" in text
    # one table per budget: the 4 MiB search does not replace the 512 MiB one
    assert "fits 4 MiB" in text and "fits 512 MiB" in text and "fits 0" not in text
    assert "Budget searches not run: triton float32 (not started: the run passed its 45 s)." in text
    assert "| chunked | float32 | 128 | 2048 | budget | 30 MiB | 20 ms |" in text
    assert "- triton: needs a CUDA tensor" in text
    assert "| chunked | float32 | 1.0e-07 | 2.0e-06 | float64 reference |" in text
    assert "TFLOP/s" not in text  # CPU report: no TFLOP/s table


def test_plots_are_pngs(results_dir: Path) -> None:
    # matplotlib is in the dev extra: the README's test command makes these PNGs
    outcome = report.generate(results_dir, results_dir / "REPORT.md")
    names = sorted(p.name for p in outcome.plots)
    assert names == [
        "cpu-test-cpu-9000-float32-D128-fwd-bwd-memory.png",
        "cpu-test-cpu-9000-float32-D128-fwd-bwd-time.png",
    ]
    for path in outcome.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{path.name})" in outcome.markdown.read_text()


def test_cli_report(results_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out" / "REPORT.md"
    assert (
        main(["bench", "report", "--results", str(results_dir), "--out", str(out), "--no-plots"])
        == 0
    )
    assert "| 2048 | 40 ms | 20 ms (2×) |" in out.read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench", "report", "--results", str(empty)]) == 2
    assert "no results under" in capsys.readouterr().err


def report_cli(results: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fastclr.cli.main", "bench", "report", "--no-plots"]
    return subprocess.run(
        [*command, "--results", str(results)], capture_output=True, text=True, timeout=120
    )


def damage(results_dir: Path, how: str) -> Path:
    """A newer results file, damaged as `how` says; returns its path."""
    path = results_dir / "cpu-test-cpu-9000" / "20260103T000000Z.json"
    good = {
        "schema": report.SCHEMA,
        "env": env("2026-01-03T00:00:00+00:00"),
        "settings": {},
        "results": [timing("chunked", "fwd+bwd", 1024, 0.001, 8 * MIB)],
    }
    if how == "truncated":
        path.write_text(json.dumps(good)[:150])
    elif how == "missing key":
        del good["results"][0]["rows"]
        path.write_text(json.dumps(good))
    elif how == "wrong type":
        good["results"][0]["time"]["median_s"] = "fast"
        path.write_text(json.dumps(good))
    elif how == "env missing":
        del good["env"]["timestamp"]
        path.write_text(json.dumps(good))
    return path


@pytest.mark.parametrize(
    "how, says",
    [
        ("truncated", "not valid JSON"),
        ("missing key", "has no 'rows'"),
        ("wrong type", "['median_s'] is str 'fast', expected a number"),
        ("env missing", "env has no 'timestamp'"),
    ],
)
def test_cli_report_names_a_damaged_file(results_dir: Path, how: str, says: str) -> None:
    """A damaged newer file must stop the report (rc 2, one line naming it), not leave a stale one."""
    before = (results_dir / "REPORT.md").exists()
    path = damage(results_dir, how)
    done = report_cli(results_dir)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert (results_dir / "REPORT.md").exists() == before  # nothing written


def test_cli_report_folder_with_only_a_corrupt_file(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "some-gpu"
    folder.mkdir(parents=True)
    (folder / "20260101T000000Z.json").write_text('{"schema": "fastclr-bench/1", "env": {')
    done = report_cli(tmp_path / "results")
    assert done.returncode == 2
    assert (
        "20260101T000000Z.json: not valid JSON" in done.stderr and "no results" not in done.stderr
    )


def test_static_figures_in_report_labelled_as_estimates(results_dir: Path) -> None:
    """`fastclr bench static`'s newest committed results appear, their times called estimates."""
    committed = Path(__file__).parents[1] / "bench" / "results" / "static"
    newest = max(committed.glob("*/static.json"), key=lambda p: p.stat().st_mtime)
    target = results_dir / "static" / newest.parent.name
    target.mkdir(parents=True)
    shutil.copy(newest, target / "static.json")
    text = report.generate(results_dir, plots=False).markdown.read_text()
    assert "## Static analysis (compiled code, no GPU" in text
    assert "ESTIMATES of the roofline model" in text


def test_train_and_data_results_in_report(results_dir: Path) -> None:
    device = results_dir / "cpu-test-cpu-9000"
    train = [{"suite": "train", "arch": "resnet50", "image_size": 224, "batch_size": 512,
              "inputs": "synthetic", "loss": "fused", "compile": True, "channels_last": True,
              "amp": "bf16", "images_per_s": 3123.4, "status": "ok"}]  # fmt: skip
    payload = {"schema": "fastclr-bench-train/1", "env": env("2026-01-04T00:00:00+00:00"),
               "results": train}  # fmt: skip
    (device / "train-20260104T000000Z.json").write_text(json.dumps(payload))
    outcome = report.generate(results_dir)
    text = outcome.markdown.read_text()
    assert (
        "| step: synthetic, fused loss, torch.compile, channels_last, bf16 | resnet50 | 224 | "
        "512 | 3123 | ok |" in text
    )
    assert any(p.name == "cpu-test-cpu-9000-throughput.png" for p in outcome.plots)


def test_cli_run_needs_the_suites(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "run", "--bench-dir", str(tmp_path)]) == 2
    assert "no benchmark suites" in capsys.readouterr().err
