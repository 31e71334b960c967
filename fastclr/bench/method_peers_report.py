"""The Markdown table of a `fastclr bench methods` run, written atomically beside its JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

COLUMNS = ("method", "implementation", "epochs", "batch", "kNN top-1", "images/s", "seconds")


def cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render(env: dict[str, Any], settings: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Header (settings, machine, code), the table, then each row's note and training settings."""
    side, harness = env.get("fastclr_side", {}), env.get("harness_side", {})

    def code(source: dict[str, Any]) -> str:
        dirty = " + uncommitted changes" if source.get("dirty") else ""
        return f"{source.get('path')} ({source.get('branch')} @ {source.get('commit')}{dirty})"

    lines = [
        f"# fastclr vs lightly, method by method ({env['timestamp']})",
        "",
        f"Data {settings['data']} at {settings['image_size']} px, batch {settings['batch_size']}, "
        f"{settings['epochs']} epochs, seed {settings['seed']}, fp32 on the CPU, "
        f"{settings['threads']} torch threads, {settings['workers']} loader workers; the same "
        "augmented views (fastclr's torch loader), initial backbone, optimizer, lr schedule and "
        "method settings on both sides (read from fastclr's resolved config). kNN top-1: weighted "
        "kNN (k=200, T=0.1) of the backbone, train split as bank, val split as queries. images/s: "
        "images trained per second of training wall clock (loader included, kNN excluded); each "
        "image is two views. seconds: training seconds.",
        "",
        f"Machine: {env['cpu']} ({env['device_slug']}), load average at start "
        f"{env.get('load_average')}; torch {env['torch']}, lightly {env.get('lightly')}, "
        f"python {env['python']}.",
        f"fastclr side: `fastclr train` of {code(side)}; lightly side and harness: {code(harness)}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        values = (
            row["method"], row["implementation"], cell(row["epochs"]), cell(row["batch"]),
            cell(row.get("knn_top1")), cell(row.get("images_per_s"), 1),
            cell(row.get("train_seconds"), 1),
        )  # fmt: skip
        if row["status"] != "measured":
            values = (*values[:4], row["status"], "-", "-")
        lines.append("| " + " | ".join(str(v) for v in values) + " |")
    lines.append("")
    for row in rows:
        notes = [row["note"]] if row.get("note") else []
        if row.get("settings"):
            notes.append(", ".join(f"{k} {v}" for k, v in row["settings"].items()))
        if notes:
            lines.append(f"- {row['method']} / {row['implementation']}: " + "; ".join(notes))
    return "\n".join(lines) + "\n"


def write_markdown(
    path: Path, env: dict[str, Any], settings: dict[str, Any], rows: list[dict[str, Any]]
) -> Path:
    """Write the table to `path` atomically (a temporary file renamed over it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(render(env, settings, rows))
    os.replace(tmp, path)
    return path
