"""PNG pictures of a run: training curves (`fastclr plot RUN`) and fine-tune vs scratch curves.

matplotlib runs headless (the Agg backend) and is imported only when a picture is drawn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fastclr.errors import UsageError

_RUN_STYLES = {"pretrained": "tab:blue", "scratch": "tab:orange"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The JSON records of a run's log.jsonl (a truncated last line, from a crash, is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such log; pass a run folder written by `fastclr train`")
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):  # only the last line may be cut short by a crash
                raise UsageError(f"{path}:{number}: not a JSON line; the log is corrupt") from None
    return records


def _is_two_view_nt_xent(config: dict) -> bool:
    """SimCLR with two views and NT-Xent (what runs logged before --method/--views/--loss ran)."""
    return (
        config.get("method", "simclr") == "simclr"
        and config.get("views", 2) == 2
        and config.get("loss") in (None, "ntxent")
    )


def plot_training_run(log_path: str | Path, png_path: str | Path) -> Path:
    """Loss and learning rate per logged step, kNN top-1 per epoch, from log.jsonl -> one PNG."""
    records = read_log(log_path)
    steps = [r for r in records if r.get("kind") == "step"]
    if not steps:
        raise UsageError(f"{log_path}: no training steps logged yet; nothing to plot")
    knn = [(0, r["top1"]) for r in records if r.get("kind") == "knn" and "top1" in r]
    knn += [
        (r["epoch"], r["knn_top1"])
        for r in records
        if r.get("kind") == "epoch" and r.get("knn_top1") is not None
    ]
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = 3 if knn else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), constrained_layout=True)
    x = [r["step"] for r in steps]
    axes[0].plot(x, [r["loss"] for r in steps], color="tab:blue")
    config = next((r["config"] for r in records if "config" in r), {})
    batch = config.get("batch_size")
    if batch and _is_two_view_nt_xent(config):
        # A random encoder's loss: the positive is one of the 2N - 1 candidates.
        axes[0].axhline(math.log(2 * batch - 1), ls=":", color="grey", label="chance log(2N-1)")
        axes[0].legend(fontsize=8)
    loss_name = "NT-Xent loss" if _is_two_view_nt_xent(config) else "loss"
    axes[0].set(xlabel="step", ylabel=loss_name, title="training loss")
    axes[1].plot(x, [r["lr"] for r in steps], color="tab:green")
    axes[1].set(xlabel="step", ylabel="learning rate", title="schedule")
    if knn:
        epochs, top1 = zip(*sorted(knn), strict=True)
        axes[2].plot(epochs, top1, marker="o", color="tab:red")
        axes[2].set(xlabel="epoch", ylabel="kNN top-1 (%)", title="kNN monitor (val)")
        axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"fastclr train: {Path(log_path).parent.name}", fontsize=10)
    return _save(fig, plt, png_path)


def plot_finetune_curves(
    records: Iterable[Mapping[str, Any]], png_path: str | Path, title: str
) -> Path:
    """Loss and top-1 per epoch, train (dashed) and val (solid), one colour per run -> one PNG."""
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_run.setdefault(str(record["run"]), []).append(record)
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9.5, 3.6), constrained_layout=True)
    for run, rows in by_run.items():
        color = _RUN_STYLES.get(run)
        epochs = [r["epoch"] for r in rows]
        for split, style in (("train", "--"), ("val", "-")):
            label = f"{run} {split}"
            loss_ax.plot(
                epochs, [r[f"{split}_loss"] for r in rows], style, color=color, label=label
            )
            acc_ax.plot(epochs, [r[f"{split}_acc"] for r in rows], style, color=color, label=label)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, plt, png_path)


def _save(fig, plt, png_path: str | Path) -> Path:
    path = Path(png_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
