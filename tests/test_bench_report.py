"""`fastclr bench report` on small synthetic results: tables, ratios, budgets, plots, the CLI."""

import json
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
                **timing("reference", "fwd+bwd", 2048, 0.040, 256 * MIB),
                "suite": "budget",
                "budget_bytes": 512 * MIB,
                "largest_rows": 2048,
                "limited_by": "budget",
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
    assert "- triton: needs a CUDA tensor" in text
    assert "| chunked | float32 | 1.0e-07 | 2.0e-06 | float64 reference |" in text
    assert "TFLOP/s" not in text  # CPU report: no TFLOP/s table


def test_plots_are_pngs(results_dir: Path) -> None:
    pytest.importorskip("matplotlib")
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
    assert main(["bench", "report", "--results", str(empty)]) == 1
    assert "no results" in capsys.readouterr().err


def test_cli_run_needs_the_suites(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "run", "--bench-dir", str(tmp_path)]) == 2
    assert "no benchmark suites" in capsys.readouterr().err
