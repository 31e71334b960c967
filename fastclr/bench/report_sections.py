"""The report's sections beyond the loss tables: training-step and loader images/s (with a PNG),
the stages of the GPU acceptance run, and the static estimates of `fastclr bench static` beside
the measured figures. Each takes what fastclr/bench/report_inputs.py read and returns Markdown lines.
"""

from collections import defaultdict
from pathlib import Path

from fastclr.bench.report_inputs import DATA, TRAIN, Run, read_json
from fastclr.errors import UsageError


def throughput_rows(runs: list[Run], slug: str) -> list[dict]:
    """The newest record of every training-step / loader configuration on one device."""
    newest: dict[tuple, dict] = {}
    for run in runs:
        if run.env["device_slug"] != slug or run.schema not in (TRAIN, DATA):
            continue
        for record in run.results:
            key = tuple(
                str(record.get(k))
                for k in ("case", "arch", "image_size", "inputs", "loss", "compile",
                          "channels_last", "amp", "backend")
            )  # fmt: skip
            newest[key] = {**record, "schema": run.schema, "run": run.env["timestamp"]}
    return list(newest.values())


def label(record: dict) -> str:
    if record["schema"] == DATA:
        return f"loading: {record.get('backend', '?')} ({record['case']})"
    parts = [record.get("inputs", "synthetic"), f"{record.get('loss')} loss"]
    parts.append("torch.compile" if record.get("compile") else "eager")
    parts.append("channels_last" if record.get("channels_last") else "NCHW")
    parts.append(str(record.get("amp")))
    return "step: " + ", ".join(parts)


def throughput_lines(rows: list[dict], plot: Path | None, out: Path) -> list[str]:
    if not rows:
        return []
    lines = [
        "### Training step and loading throughput",
        "",
        "images/s counts source images (each gives two views). Steps: SimCLR step with LARS.",
        "",
        "| what | model | image px | batch | images/s | status |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=label):
        rate = f"{r['images_per_s']:.4g}" if r.get("status", "ok") == "ok" else "—"
        status = r.get("status", "ok") + (f": {r['reason']}" if r.get("reason") else "")
        lines.append(
            f"| {label(r)} | {r.get('arch', '—')} | {r.get('image_size', '—')} | "
            f"{r.get('batch_size', '—')} | {rate} | {status} |"
        )
    lines.append("")
    if plot is not None:
        lines += [f"![{plot.stem}]({plot.relative_to(out.parent).as_posix()})", ""]
    return lines


def throughput_plot(rows: list[dict], device: str, path: Path) -> Path | None:
    """Horizontal bars of images/s, one per configuration measured. Needs matplotlib."""
    measured = sorted((r for r in rows if r.get("status", "ok") == "ok"), key=label)
    if not measured:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(measured) + 1.6))
    names = [f"{label(r)}, batch {r.get('batch_size')}" for r in measured]
    rates = [r["images_per_s"] for r in measured]
    bars = ax.barh(names, rates, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.4g}" for v in rates], fontsize=7, padding=2)
    if max(rates) > 100 * min(rates):  # a loader 1000x faster than a CPU step: keep both visible
        ax.set_xscale("log")
    ax.set_xlabel("images/s (source images; two views each)")
    ax.set_title(f"{device}: training step and loading throughput", fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def acceptance_lines(stages: list[dict], slug: str) -> list[str]:
    mine = [s for s in stages if Path(s["path"]).parent.parent.name == slug]
    if not mine:
        return []
    from fastclr.bench.acceptance import STAGE_NAMES

    order = {name: i for i, name in enumerate(STAGE_NAMES)}
    dry = any(s.get("dry_run") for s in mine)
    lines = [
        "### GPU acceptance run (`fastclr bench gpu`)"
        + (" — DRY RUN, CPU, tiny sizes" if dry else ""),
        "",
        "| stage | status | seconds | started | note |",
        "|---|---|---:|---|---|",
    ]
    for s in sorted(mine, key=lambda s: order.get(s["stage"], len(order))):
        note = (s.get("error") or "").splitlines()[0][:120] if s.get("error") else ""
        env = (s.get("result") or {}) if s["stage"] == "env" else {}
        if env.get("nvidia_smi") and isinstance(env["nvidia_smi"], dict):
            smi = env["nvidia_smi"]
            note = (f"SM clock {smi.get('clocks.sm')} of {smi.get('clocks.max.sm')} MHz, memory "
                    f"{smi.get('memory.total')} MiB, power limit {smi.get('power.limit')} W")  # fmt: skip
        if s["stage"] == "gpu-tests" and isinstance(s.get("result"), dict):
            note = ", ".join(f"{n} {k}" for k, n in s["result"].get("counts", {}).items())
        seconds = s.get("seconds")
        lines.append(
            f"| {s['stage']} | {s['status']} | {seconds:.0f} | {s.get('started') or '—'} | "
            f"{note.replace('|', '/')} |"
            if seconds is not None
            else f"| {s['stage']} | {s['status']} | — | — | {note} |"
        )
    return [*lines, ""]


def scalar_items(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool)) or v is None}


def static_lines(files: list[Path], results_dir: Path, measured: dict[tuple, float]) -> list[str]:
    """`fastclr bench static`'s JSON (another tool's format: every list of objects in it becomes a
    table of its scalar fields), with the measured median beside each row whose (impl, mode, rows,
    dim, dtype) was measured. Labelled as estimates."""
    lines = ["## Static estimates (`fastclr bench static`): ESTIMATES, not measurements", ""]
    if not files:
        return [
            *lines,
            f"None found under {results_dir / 'static'}/ (run `fastclr bench static`).",
            "",
        ]
    for path in files:
        lines += [f"From `{path.relative_to(results_dir).as_posix()}`:", ""]
        try:
            data = read_json(path)
        except UsageError as err:
            lines += [f"Unreadable, left out: {err}", ""]
            continue
        tables = [v for v in (data.values() if isinstance(data, dict) else [data])
                  if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]  # fmt: skip
        if not tables:
            lines += ["(no list of records in this file)", ""]
        for records in tables:
            columns = list(dict.fromkeys(k for r in records for k in scalar_items(r)))[:10]
            extra = any(key_of(r) in measured for r in records)
            header = columns + (["measured median"] if extra else [])
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for r in records:
                cells = [fmt(r.get(c)) for c in columns]
                if extra:
                    got = measured.get(key_of(r))
                    cells.append(f"{got * 1e3:.3g} ms" if got is not None else "—")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def key_of(record: dict) -> tuple:
    return tuple(str(record.get(k)) for k in ("impl", "mode", "rows", "dim", "dtype"))


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value).replace("|", "/")


def measured_medians(runs: list[Run]) -> dict[tuple, float]:
    """(impl, mode, rows, dim, dtype) -> newest measured median seconds, over every device."""
    out: dict[tuple, float] = {}
    for run in runs:
        for r in run.results:
            if r.get("status") == "ok" and isinstance(r.get("time"), dict):
                out[key_of(r)] = r["time"]["median_s"]
    return out


def devices_of(runs: list[Run]) -> dict[str, dict]:
    """device slug -> env of its newest run."""
    envs: dict[str, dict] = defaultdict(dict)
    for run in runs:
        envs[run.env["device_slug"]] = run.env
    return dict(envs)
