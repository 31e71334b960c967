"""The Markdown report of a `fastclr bench methods` run (schema fastclr.method_peers/2), written
atomically beside its JSON, and the statistics over seeds it shows.

The JSON has one row per method, implementation ("fastclr", "lightly") and seed, plus one
"random-init" row per seed (method "-"): the kNN of the encoder both sides of that seed start from.
The report gives, per method and implementation, over the seeds measured:
  - kNN top-1: mean and min–max;
  - gain: kNN minus the same seed's random-init kNN (paired by seed), mean and min–max;
  - images/s and training seconds: median;
then fastclr − lightly per method paired by seed (kNN difference, images/s ratio), the kNN of every
seed (the spread behind the means), and the notes (failures, each method's training settings).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

Row = dict[str, Any]
BASELINE = "random-init"


def cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def spread(values: list[float]) -> dict[str, float] | None:
    """mean, median, min and max of `values`; None when there are none."""
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def measured(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r["status"] == "measured" and r.get("knn_top1") is not None]


def baselines(rows: list[Row]) -> dict[int, float]:
    """seed -> kNN top-1 of that seed's random-init encoder."""
    return {r["seed"]: r["knn_top1"] for r in measured(rows) if r["implementation"] == BASELINE}


def summarize(rows: list[Row]) -> list[dict[str, Any]]:
    """One record per (method, implementation), the random-init baseline first, then in the rows'
    order: seeds (those measured), knn and gain (spread() over seeds; gain None unless every
    measured seed has its random-init kNN), images_per_s and train_seconds (spread() or None)."""
    base = baselines(rows)
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in sorted(
        rows, key=lambda r: r["implementation"] != BASELINE
    ):  # stable: baseline first
        groups.setdefault((row["method"], row["implementation"]), []).append(row)
    summary = []
    for (method, implementation), group in groups.items():
        done = measured(group)
        gains = [r["knn_top1"] - base[r["seed"]] for r in done if r["seed"] in base]
        paired = implementation != BASELINE and len(gains) == len(done)
        summary.append(
            {
                "method": method,
                "implementation": implementation,
                "seeds": [r["seed"] for r in done],
                "knn": spread([r["knn_top1"] for r in done]),
                "gain": spread(gains) if paired else None,
                "images_per_s": spread([r["images_per_s"] for r in done if r["images_per_s"]]),
                "train_seconds": spread([r["train_seconds"] for r in done if r["train_seconds"]]),
            }
        )
    return summary


def fastclr_minus_lightly(rows: list[Row]) -> list[dict[str, Any]]:
    """Per method, over the seeds where both sides were measured: seeds, knn_difference
    (fastclr − lightly kNN, spread()) and speed_ratio (fastclr / lightly images/s, spread())."""
    by_key = {(r["method"], r["implementation"], r["seed"]): r for r in measured(rows)}
    methods = dict.fromkeys(r["method"] for r in rows if r["implementation"] != BASELINE)
    pairs = []
    for method in methods:
        seeds = [
            seed
            for (m, implementation, seed) in by_key
            if m == method and implementation == "fastclr" and (method, "lightly", seed) in by_key
        ]
        sides = [(by_key[method, "fastclr", s], by_key[method, "lightly", s]) for s in seeds]
        pairs.append(
            {
                "method": method,
                "seeds": seeds,
                "knn_difference": spread([f["knn_top1"] - li["knn_top1"] for f, li in sides]),
                "speed_ratio": spread(
                    [
                        f["images_per_s"] / li["images_per_s"]
                        for f, li in sides
                        if li["images_per_s"]
                    ]
                ),
            }
        )
    return pairs


def signed(stats: dict[str, float] | None, centre: str = "mean", digits: int = 2) -> str:
    """'+2.31 (+1.95 to +2.90)': the centre and the min–max of signed values; '-' for None."""
    if stats is None:
        return "-"
    low, high = stats["min"], stats["max"]
    return f"{stats[centre]:+.{digits}f} ({low:+.{digits}f} to {high:+.{digits}f})"


def table(header: tuple[str, ...], body: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(v) for v in values) + " |" for values in body]


def summary_table(rows: list[Row], planned: int) -> list[str]:
    body = []
    for s in summarize(rows):
        knn, speed, seconds = s["knn"], s["images_per_s"], s["train_seconds"]
        count = len(s["seeds"])
        body.append(
            (
                s["method"], s["implementation"],
                count if count == planned else f"{count} of {planned}",
                cell(knn and knn["mean"]),
                f"{knn['min']:.2f}–{knn['max']:.2f}" if knn else "-",
                signed(s["gain"]),
                cell(speed and speed["median"], 1), cell(seconds and seconds["median"], 1),
            )
        )  # fmt: skip
    header = (
        "method", "implementation", "seeds", "kNN top-1 mean", "kNN min–max",
        "gain over random-init, mean (min to max)", "images/s median", "seconds median",
    )  # fmt: skip
    return table(header, body)


def pairs_table(rows: list[Row]) -> list[str]:
    body = [
        (p["method"], len(p["seeds"]), signed(p["knn_difference"]),
         "-" if p["speed_ratio"] is None else
         f"{p['speed_ratio']['median']:.2f}x ({p['speed_ratio']['min']:.2f}x to "
         f"{p['speed_ratio']['max']:.2f}x)")
        for p in fastclr_minus_lightly(rows)
    ]  # fmt: skip
    header = (
        "method", "seeds", "kNN fastclr − lightly, mean (min to max)",
        "images/s fastclr / lightly, median (min to max)",
    )  # fmt: skip
    return table(header, body)


def seeds_table(rows: list[Row], seeds: list[int]) -> list[str]:
    """kNN (or the status) of every method, implementation and seed; '-' for a run not reached."""
    by_key = {(r["method"], r["implementation"], r["seed"]): r for r in rows}
    keys = dict.fromkeys((s["method"], s["implementation"]) for s in summarize(rows))

    def shown(row: Row | None) -> str:
        if row is None:
            return "-"
        return cell(row["knn_top1"]) if row["status"] == "measured" else row["status"]

    body = [
        (method, implementation, *(shown(by_key.get((method, implementation, s))) for s in seeds))
        for method, implementation in keys
    ]
    return table(("method", "implementation", *(f"seed {seed}" for seed in seeds)), body)


def notes(rows: list[Row], seeds: list[int]) -> list[str]:
    """Each distinct note and settings record once, with the seeds it holds for unless all."""
    where: dict[tuple[str, str, str], list[int]] = {}
    for row in rows:
        texts = [row["note"]] if row.get("note") else []
        if row.get("settings"):
            texts.append(", ".join(f"{k} {v}" for k, v in row["settings"].items()))
        for text in texts:
            where.setdefault((row["method"], row["implementation"], text), []).append(row["seed"])
    lines = []
    for (method, implementation, text), held in where.items():
        shown = [str(seed) for seed in seeds if seed in held]
        which = "" if len(shown) == len(seeds) else f" (seed {', '.join(shown)})"
        lines.append(f"- {method} / {implementation}{which}: {text}")
    return lines


def render(env: dict[str, Any], settings: dict[str, Any], rows: list[Row]) -> str:
    """Header (settings, machine, code), the summary over seeds, fastclr − lightly paired by seed,
    the kNN of every seed, then the notes (failures, each method's training settings)."""
    side, harness = env.get("fastclr_side", {}), env.get("harness_side", {})
    seeds = list(settings["seeds"])

    def code(source: dict[str, Any]) -> str:
        dirty = " + uncommitted changes" if source.get("dirty") else ""
        return f"{source.get('path')} ({source.get('branch')} @ {source.get('commit')}{dirty})"

    lines = [
        f"# fastclr vs lightly, method by method ({env['timestamp']})",
        "",
        f"Data {settings['data']} at {settings['image_size']} px, batch {settings['batch_size']}, "
        f"{settings['epochs']} epochs, {len(seeds)} seeds ({', '.join(map(str, seeds))}), fp32 on "
        f"the CPU, {settings['threads']} torch threads, {settings['workers']} loader workers; the "
        "same augmented views (fastclr's torch loader), initial backbone, optimizer, lr schedule "
        "and method settings on both sides (read from fastclr's resolved config). A seed sets the "
        "initial backbone and the views; for each method and seed, fastclr's run then lightly's, "
        "back to back. kNN top-1: weighted kNN (k=200, T=0.1) of the backbone, train split as "
        "bank, val split as queries. gain: kNN minus the kNN of the same seed's random-init "
        "encoder (the one both sides of that seed start from). images/s: images trained per "
        "second of training wall clock (loader included, kNN excluded); each image is two views. "
        "seconds: training seconds. Means, medians and min–max are over the seeds measured; with "
        "this few seeds min–max is the spread seen, not a confidence interval.",
        "",
        f"Machine: {env['cpu']} ({env['device_slug']}), load average at start "
        f"{env.get('load_average')}; torch {env['torch']}, lightly {env.get('lightly')}, "
        f"python {env['python']}.",
        f"fastclr side: `fastclr train` of {code(side)}; lightly side and harness: {code(harness)}.",
        "",
        f"## Over {len(seeds)} seeds",
        "",
        *summary_table(rows, len(seeds)),
        "",
        "## fastclr − lightly, paired by seed",
        "",
        *pairs_table(rows),
        "",
        "## kNN top-1 by seed",
        "",
        *seeds_table(rows, seeds),
        "",
        *notes(rows, seeds),
    ]
    return "\n".join(lines) + "\n"


def write_markdown(
    path: Path, env: dict[str, Any], settings: dict[str, Any], rows: list[Row]
) -> Path:
    """Write the report to `path` atomically (a temporary file renamed over it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(render(env, settings, rows))
    os.replace(tmp, path)
    return path
