"""`fastclr bench report`: the JSON results under bench/results/ as a Markdown report with PNG plots
(log-log time and peak memory vs batch size, one line per implementation; training and loading
images/s), the loss family against the peers (report_family.py), the GPU acceptance run's stages
and the static estimates beside the measured figures.

Input: every bench/results/<device-slug>/*.json (read and checked by report_inputs.py: an unreadable
or incomplete results file stops the report with a UsageError naming it). Per device, the newest
successful measurement of each (implementation, mode, 2N, D, dtype) wins, so partial re-runs
refresh their own rows and keep the others. matplotlib is in the `dev` and `bench` extras: without
it the tables are written and the plots are not, and the report says so.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from fastclr.bench import report_family, report_sections
from fastclr.bench.report_inputs import LOSS, STATIC_DIR, Run, load
from fastclr.bench.static.render import report_section
from fastclr.errors import UsageError

SCHEMA = LOSS
MIB = 2**20

# Column order of the tables and legend order of the plots; unknown names follow, sorted.
IMPL_ORDER = (
    "reference",
    "reference-compiled",
    "chunked",
    "triton",
    "cuda",
    "lightly",
    "pytorch-metric-learning",
    "matmul-floor",
)
BASELINE = "reference"
STATUS_TEXT = {
    "out of memory": "OOM",
    "too slow": "too slow",
    "predicted too big": "too big",
    "no fit": "no fit",
    "deadline": "not run (deadline)",
}


@dataclass
class Device:
    """The newest record of every measurement on one device, and the runs they came from."""

    slug: str
    env: dict  # of the newest run
    runs: list[Run] = field(default_factory=list)
    timings: dict[tuple, dict] = field(default_factory=dict)  # (impl, mode, rows, dim, dtype)
    budgets: dict[tuple, dict] = field(default_factory=dict)  # (budget bytes, impl, dim, dtype)


@dataclass
class Outcome:
    markdown: Path
    plots: list[Path]
    warnings: list[str]


def collect_devices(runs: list[Run]) -> list[Device]:
    devices: dict[str, Device] = {}
    for run in runs:
        if run.schema != LOSS:
            devices.setdefault(run.env["device_slug"], Device(run.env["device_slug"], run.env))
            continue
        device = devices.setdefault(run.env["device_slug"], Device(run.env["device_slug"], run.env))
        device.env = run.env
        device.runs.append(run)
        for record in run.results:
            if record["suite"] == "budget":
                key = (record.get("budget_bytes"), record["impl"], record["dim"], record["dtype"])
                _keep_newest(device.budgets, key, {**record, "run": run.env["timestamp"]})
            else:
                key = (
                    record["impl"],
                    record["mode"],
                    record["rows"],
                    record["dim"],
                    record["dtype"],
                )
                _keep_newest(device.timings, key, {**record, "run": run.env["timestamp"]})
    return [devices[slug] for slug in sorted(devices)]


def _keep_newest(table: dict, key: tuple, record: dict) -> None:
    """A newer record replaces an older one, except that a skip never hides a measurement."""
    old = table.get(key)
    if old is None or record["status"] == "ok" or old["status"] != "ok":
        table[key] = record


def impl_sort_key(name: str) -> tuple[int, str]:
    return (IMPL_ORDER.index(name) if name in IMPL_ORDER else len(IMPL_ORDER), name)


def format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def format_bytes(count: float) -> str:
    if count >= 2**30:
        return f"{count / 2**30:.3g} GiB"
    return f"{count / MIB:.3g} MiB"


def format_ratio(ratio: float) -> str:
    return f"{ratio:.3g}×"


def time_of(record: dict | None) -> float | None:
    if record is None or record["status"] != "ok" or not record.get("time"):
        return None
    return record["time"]["median_s"]


def peak_of(record: dict | None) -> float | None:
    if record is None or record["status"] != "ok":
        return None
    return record.get("peak_bytes")


def groups(device: Device) -> dict[tuple[str, int, str], dict[int, dict[str, dict]]]:
    """(dtype, dim, mode) -> rows -> impl -> record."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (impl, mode, rows, dim, dtype), record in device.timings.items():
        out[(dtype, dim, mode)][rows][impl] = record
    return out


def table(rows: dict[int, dict[str, dict]], value, fmt, ratio_sense: str | None) -> list[str]:
    """A Markdown table: one row per 2N, one column per implementation with any measurement.

    Each cell: the value, then (baseline / value) when the baseline was measured at that size and
    `ratio_sense` says how to read it (None: no ratios).
    """
    impls = sorted(
        {i for per in rows.values() for i, r in per.items() if value(r) is not None},
        key=impl_sort_key,
    )
    if not impls:
        return []
    lines = ["| 2N | " + " | ".join(impls) + " |", "|---:|" + "---:|" * len(impls)]
    for count in sorted(rows):
        per = rows[count]
        base = value(per.get(BASELINE))
        cells = []
        for impl in impls:
            record = per.get(impl)
            got = value(record)
            if got is None:
                status = record["status"] if record else ""
                cells.append(STATUS_TEXT.get(status, "—"))
            elif ratio_sense and base is not None and impl != BASELINE and got > 0:
                cells.append(f"{fmt(got)} ({format_ratio(base / got)})")
            else:
                cells.append(fmt(got))
        lines.append(f"| {count} | " + " | ".join(cells) + " |")
    lines.append("")
    if ratio_sense:
        lines += [f"(n×) = {BASELINE} / this: {ratio_sense}.", ""]
    return lines


def tflops_of(record: dict | None) -> float | None:
    if record is None or record["status"] != "ok" or not record.get("tflops"):
        return None
    return record["tflops"]


def accuracy_lines(device: Device) -> list[str]:
    worst: dict[tuple[str, str], list] = {}
    for (impl, _, _, _, dtype), record in device.timings.items():
        if record["status"] != "ok" or record.get("value_rel_err") is None:
            continue
        entry = worst.setdefault((impl, dtype), [0.0, 0.0, set()])
        entry[0] = max(entry[0], record["value_rel_err"])
        entry[1] = max(entry[1], record["grad_rel_err"])
        entry[2].add(record.get("oracle", "?"))
    if not worst:
        return []
    lines = [
        "Every timed implementation was first checked against the oracle on the same inputs "
        "(largest relative errors over all sizes):",
        "",
        "| implementation | dtype | value rel. error | gradient rel. error | oracle |",
        "|---|---|---:|---:|---|",
    ]
    for (impl, dtype), (value_err, grad_err, oracles) in sorted(
        worst.items(), key=lambda item: (impl_sort_key(item[0][0]), item[0][1])
    ):
        lines.append(
            f"| {impl} | {dtype} | {value_err:.1e} | {grad_err:.1e} | {', '.join(sorted(oracles))} |"
        )
    lines.append("")
    return lines


def budget_lines(device: Device) -> list[str]:
    lines: list[str] = []
    by_budget: dict = defaultdict(dict)
    unsearched = {}  # not started (a deadline): no budget to file them under
    for (budget, *rest), record in device.budgets.items():
        if budget is not None:
            by_budget[budget][tuple(rest)] = record
        elif record["status"] != "unavailable":  # those are listed with the reason elsewhere
            unsearched[(record["impl"], record["dtype"])] = record.get("reason", "")
    searched = {(impl, dtype) for records in by_budget.values() for impl, _, dtype in records}
    for budget, records in sorted(by_budget.items()):
        lines += [
            f"### Largest batch whose forward+backward fits {format_bytes(budget)}",
            "",
            "Doubling search over 2N; peak extra memory measured at every step.",
            "",
            "| implementation | dtype | D | largest 2N | limited by | peak there | fwd+bwd time there |",
            "|---|---|---:|---:|---|---:|---:|",
        ]
        for (impl, dim, dtype), record in sorted(
            records.items(), key=lambda item: (item[0][2], item[0][1], impl_sort_key(item[0][0]))
        ):
            if record["status"] == "unavailable":
                continue
            largest = record.get("largest_rows")
            limited = record.get("limited_by", record["status"])
            shown = (
                "—" if largest is None else (f"≥ {largest}" if limited == "cap" else str(largest))
            )
            peak = peak_of(record)
            seconds = time_of(record)
            lines.append(
                f"| {impl} | {dtype} | {dim} | {shown} | {limited} | "
                f"{format_bytes(peak) if peak is not None else '—'} | "
                f"{format_seconds(seconds) if seconds is not None else '—'} |"
            )
        lines += [
            "",
            "limited by: budget (next size over it), OOM, time, cap (end of the size grid).",
            "",
        ]
    missing = sorted(
        f"{i} {d} ({why})" for (i, d), why in unsearched.items() if (i, d) not in searched
    )
    if missing:
        lines += [f"Budget searches not run: {'; '.join(missing)}.", ""]
    return lines


def unavailable_lines(device: Device) -> list[str]:
    reasons: dict[str, set[str]] = defaultdict(set)
    for (impl, *_), record in device.timings.items():
        if record["status"] == "unavailable":
            reasons[impl].add(record.get("reason", ""))
    if not reasons:
        return []
    lines = ["Not measured on this device:", ""]
    for impl in sorted(reasons, key=impl_sort_key):
        lines.append(f"- {impl}: {'; '.join(sorted(reasons[impl]))}")
    return [*lines, ""]


def environment_lines(device: Device) -> list[str]:
    env = device.env
    lines = [f"## {env['device']}", ""]
    if env["device_type"] == "cpu":
        load = env.get("load_average") or ["?"]
        lines.append(
            f"**CPU-only figures**: {env['cpu']}, {env['cpu_threads']} torch thread(s), load "
            f"average {load[0]:.1f} when the run began. They say nothing about GPU speed."
        )
    else:
        lines.append(
            f"GPU: {env['device']} (compute capability {env.get('compute_capability')}, "
            f"{format_bytes(env.get('device_memory_bytes') or 0)}), driver {env.get('driver')}, "
            f"CUDA {env.get('torch_cuda')}. Times are CUDA-event medians, L2 flushed before each call."
        )
    lines.append("")
    for run in device.runs:
        e = run.env
        lines.append(
            f"- run {e['timestamp']}: torch {e['torch']}, triton {e.get('triton')}, fastclr "
            f"{e['fastclr']}, lightly {e.get('lightly')}, pytorch-metric-learning "
            f"{e.get('pytorch_metric_learning')} ({run.path.name})"
        )
    lines.append("")
    return lines


def markdown(
    devices: list[Device],
    plots: dict[tuple, list[Path]],
    note: str,
    out: Path,
    extra: dict[str, list[str]] | None = None,
    tail: list[str] | None = None,
) -> str:
    """The report; extra: device slug -> lines after its loss tables; tail: lines at the end."""
    lines = [
        "# fastclr benchmarks",
        "",
        "Generated by `fastclr bench report` from the JSON results of `pytest bench/ "
        "--benchmark-only` and `fastclr bench gpu`. Loss: mean NT-Xent over cat(z1, z2), "
        "temperature 0.1; inputs are random "
        "projections with correlated positives. Times are medians; memory is the peak extra memory "
        "of one call (inputs excluded).",
        "",
    ]
    if note:
        lines += [note, ""]
    for device in devices:
        lines += environment_lines(device)
        for (dtype, dim, mode), rows in sorted(groups(device).items()):
            lines += [f"### {mode} · {dtype} · D={dim}", ""]
            lines += ["Median time per call:", ""]
            lines += table(rows, time_of, format_seconds, "above 1 is faster than the reference")
            lines += ["Peak extra memory:", ""]
            lines += table(rows, peak_of, format_bytes, "above 1 uses less memory")
            if device.env["device_type"] == "cuda":
                lines += ["Achieved TFLOP/s (2·(2N)²·D forward, 6·(2N)²·D forward+backward):", ""]
                lines += table(rows, tflops_of, lambda v: f"{v:.3g}", None)
            for path in plots.get((device.slug, dtype, dim, mode), []):
                lines += [f"![{path.stem}]({path.relative_to(out.parent).as_posix()})", ""]
        lines += budget_lines(device)
        lines += accuracy_lines(device)
        lines += unavailable_lines(device)
        lines += (extra or {}).get(device.slug, [])
    lines += tail or []
    return "\n".join(lines)


def plot_groups(devices: list[Device], folder: Path) -> dict[tuple, list[Path]]:
    """Log-log PNGs of time and peak memory vs 2N, one line per implementation. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: dict[tuple, list[Path]] = {}
    for device in devices:
        for (dtype, dim, mode), rows in sorted(groups(device).items()):
            for metric, value, label in (
                ("time", time_of, "median time per call (s)"),
                ("memory", peak_of, "peak extra memory (bytes)"),
            ):
                series: dict[str, list[tuple[int, float]]] = defaultdict(list)
                for count, per in sorted(rows.items()):
                    for impl, record in per.items():
                        got = value(record)
                        if got is not None and got > 0:
                            series[impl].append((count, got))
                if not series:
                    continue
                fig, ax = plt.subplots(figsize=(6.4, 4.4))
                for impl in sorted(series, key=impl_sort_key):
                    xs, ys = zip(*series[impl], strict=True)
                    style = "--" if impl == "matmul-floor" else "-"
                    ax.plot(xs, ys, style, marker="o", label=impl)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("batch size 2N (rows of cat(z1, z2))")
                ax.set_ylabel(label)
                where = device.env["device"] + (
                    " (CPU)" if device.env["device_type"] == "cpu" else ""
                )
                ax.set_title(f"{where}: {mode}, {dtype}, D={dim}", fontsize=10)
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=8)
                fig.tight_layout()
                name = f"{device.slug}-{dtype}-D{dim}-{mode.replace('+', '-')}-{metric}.png"
                path = folder / name
                fig.savefig(path, dpi=120)
                plt.close(fig)
                written.setdefault((device.slug, dtype, dim, mode), []).append(path)
    return written


def generate(results_dir: Path, out: Path | None = None, plots: bool = True) -> Outcome:
    """Write the Markdown report (default results_dir/REPORT.md) and, with matplotlib, its plots
    (in a plots/ folder beside it). UsageError when a results file is unreadable or incomplete, or
    when there are no results at all."""
    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir / "REPORT.md"
    if not results_dir.is_dir():
        raise UsageError(f"--results {results_dir} is not a folder: pass the results folder")
    runs, stages = load(results_dir)
    devices = collect_devices(runs)
    for stage in stages:  # a device with only acceptance records (its env stage names it)
        env = stage.get("result") if stage["stage"] == "env" else None
        if isinstance(env, dict) and env.get("device_slug") not in {d.slug for d in devices}:
            devices.append(Device(env["device_slug"], env))
    if not devices:
        raise UsageError(
            f"no results under {results_dir}: run `fastclr bench run` or `fastclr bench gpu` "
            "first, or pass --results FOLDER"
        )
    warnings: list[str] = []
    written: dict[tuple, list[Path]] = {}
    extra: dict[str, list[str]] = {}
    note = ""
    for device in devices:
        rows = report_sections.throughput_rows(runs, device.slug)
        plot = None
        if plots and rows:
            try:
                path = out.parent / "plots" / f"{device.slug}-throughput.png"
                cpu = " (CPU)" if device.env["device_type"] == "cpu" else ""
                plot = report_sections.throughput_plot(rows, device.env["device"] + cpu, path)
            except ImportError:
                pass  # said once below
        if plot is not None:
            written[(device.slug, "throughput")] = [plot]
        extra[device.slug] = report_sections.throughput_lines(rows, plot, out)
        extra[device.slug] += report_family.family_lines(runs, device.slug)
        extra[device.slug] += report_sections.acceptance_lines(stages, device.slug)
    if plots:
        try:
            written.update(plot_groups(devices, out.parent / "plots"))
        except ImportError:
            warnings.append(
                "matplotlib is not installed: tables written, plots not "
                "(pip install 'fastclr[dev]' or 'fastclr[bench]' adds it)"
            )
            note = "Plots: not generated here (matplotlib is not installed)."
    # Compile-time figures and their roofline estimates (fastclr bench static), labelled as such.
    tail = report_section(results_dir / STATIC_DIR).splitlines()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(devices, written, note, out, extra, tail) + "\n")
    return Outcome(out, [p for paths in written.values() for p in paths], warnings)
