"""The report's sections beyond the loss tables: training-step and loader images/s (with a PNG),
the stages of the GPU acceptance run, and the static estimates of `fastclr bench static` beside
the measured figures. Each takes what fastclr/bench/report_inputs.py read and returns Markdown lines.
"""

from collections import defaultdict
from pathlib import Path

from fastclr.bench.report_inputs import DATA, TRAIN, Run


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


def devices_of(runs: list[Run]) -> dict[str, dict]:
    """device slug -> env of its newest run."""
    envs: dict[str, dict] = defaultdict(dict)
    for run in runs:
        envs[run.env["device_slug"]] = run.env
    return dict(envs)
