"""Run pictures: `fastclr plot RUN` from log.jsonl, and the log reader's handling of damage."""

import json
import subprocess
import sys

import pytest

from fastclr.errors import UsageError
from fastclr.plots import plot_training_run, read_log


def write_log(folder, *, truncate_last: bool = False, config: dict | None = None) -> None:
    config = {"batch_size": 64} if config is None else config
    records = [{"kind": "run", "step": 0, "event": "start", "config": config},
               {"kind": "knn", "step": 0, "epoch": 0, "top1": 70.0}]  # fmt: skip
    for step in range(1, 21):
        records.append({"kind": "step", "step": step, "loss": 5 - step / 10, "lr": 0.1 * step})
    records.append({"kind": "epoch", "step": 20, "epoch": 1, "loss": 3.0, "knn_top1": 80.0})
    text = "".join(json.dumps(r) + "\n" for r in records)
    if truncate_last:
        text += '{"kind": "step", "st'  # a crash while appending
    (folder / "log.jsonl").write_text(text)


def test_training_run_plot_is_a_png(tmp_path):
    write_log(tmp_path, truncate_last=True)
    png = plot_training_run(tmp_path / "log.jsonl", tmp_path / "curves.png")
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000


@pytest.mark.parametrize(
    ("config", "chance"),
    [
        ({"batch_size": 64}, True),  # logged before --method existed: SimCLR, two views
        ({"batch_size": 64, "method": "simclr", "views": 2, "loss": "ntxent"}, True),
        ({"batch_size": 64, "method": "byol"}, False),
        ({"batch_size": 64, "method": "simclr", "views": 4}, False),
        ({"batch_size": 64, "method": "simclr", "loss": "supcon"}, False),
    ],
)
def test_chance_line_only_for_two_view_nt_xent(tmp_path, monkeypatch, config, chance):
    """log(2N - 1) is a random encoder's NT-Xent loss with two views; other losses get no line."""
    import matplotlib.axes

    lines = []
    real = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(
        matplotlib.axes.Axes, "axhline", lambda self, *a, **k: lines.append(a) or real(self, *a, **k)
    )
    write_log(tmp_path, config=config)
    plot_training_run(tmp_path / "log.jsonl", tmp_path / "curves.png")
    assert bool(lines) is chance


def test_corrupt_log_line_and_empty_log_are_named(tmp_path):
    write_log(tmp_path)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    lines[3] = "{not json"
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"log.jsonl:4: not a JSON line"):
        read_log(tmp_path / "log.jsonl")
    (tmp_path / "log.jsonl").write_text(json.dumps({"kind": "run", "step": 0}) + "\n")
    with pytest.raises(UsageError, match="no training steps logged yet"):
        plot_training_run(tmp_path / "log.jsonl", tmp_path / "curves.png")


def test_cli_plot(tmp_path):
    write_log(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "fastclr.cli.main", "plot", str(tmp_path)],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0 and (tmp_path / "curves.png").is_file()
    missing = subprocess.run([sys.executable, "-m", "fastclr.cli.main", "plot", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "no such log" in missing.stderr
    assert "Traceback" not in missing.stderr
