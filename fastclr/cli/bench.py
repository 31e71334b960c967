"""`fastclr bench`: run the loss benchmarks (`run`), turn their results into a report (`report`),
the GPU acceptance run (`gpu`: every GPU figure in one resumable command, fastclr/bench/acceptance/),
or analyse the compiled kernels without a GPU (`static`, fastclr/bench/static/), or train each
self-supervised method with fastclr and with lightly side by side (`methods`,
fastclr/bench/method_peers.py)."""

import argparse
import subprocess
import sys
from pathlib import Path

from fastclr.bench.static import cli as static_cli
from fastclr.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="run the loss benchmarks, or write the Markdown/PNG report of their results"
    )
    actions = parser.add_subparsers(dest="bench_action", metavar="ACTION", required=True)
    run_parser = actions.add_parser(
        "run",
        help="pytest bench/ --benchmark-only: check and time every implementation at this "
        "device's sizes; results go to bench/results/<device>/",
    )
    run_parser.add_argument(
        "--bench-dir",
        type=Path,
        default=Path("bench"),
        help="the benchmark suites of a fastclr checkout (default: bench)",
    )
    run_parser.add_argument(
        "--report", action="store_true", help="write the report afterwards (recommended)"
    )
    run_parser.add_argument(
        "pytest_args",
        nargs=argparse.REMAINDER,
        help="after --: passed to pytest, e.g. -- --bench-max-rows 8192 -k chunked",
    )
    report_parser = actions.add_parser(
        "report", help="results JSON -> Markdown tables and log-log PNG plots (needs matplotlib)"
    )
    report_parser.add_argument(
        "--results",
        type=Path,
        default=Path("bench/results"),
        help="folder searched for results JSON (default: bench/results)",
    )
    report_parser.add_argument(
        "--out", type=Path, help="Markdown file to write (default: <results>/REPORT.md)"
    )
    report_parser.add_argument("--no-plots", action="store_true", help="tables only")
    add_gpu_parser(actions)
    static_cli.add_parser(actions)
    add_methods_parser(actions)
    parser.set_defaults(func=run)


def add_gpu_parser(actions: argparse._SubParsersAction) -> None:
    from fastclr.bench.acceptance import STAGE_NAMES

    gpu = actions.add_parser(
        "gpu",
        help="the GPU acceptance run: environment, GPU tests, loss grid, memory budgets, training "
        "step, DALI, report; resumable stages (recommended: no flags, from the checkout's root)",
    )
    gpu.add_argument(
        "--stage",
        action="append",
        choices=STAGE_NAMES,
        metavar="NAME",
        help=f"run only this stage (repeatable; the report always follows): {', '.join(STAGE_NAMES)}",
    )
    gpu.add_argument(
        "--force", action="store_true", help="rerun stages whose results exist (default: skip them)"
    )
    gpu.add_argument(
        "--dry-run",
        action="store_true",
        help="every stage, writer and the report on the CPU at tiny sizes (what CI runs)",
    )
    gpu.add_argument(
        "--no-gate",
        action="store_true",
        help="run the measuring stages even if the GPU tests fail (each loss case is still "
        "checked against the oracle before it is timed; the stage records say so)",
    )
    gpu.add_argument(
        "--lease",
        action="store_true",
        help="the headline cases only, to fit one short GPU lease (~8 min on an H200): D 128, 2N "
        "4096-65536, no torch.compile, one family size, training batch 256",
    )
    gpu.add_argument(
        "--results",
        type=Path,
        help="results folder (default: bench/results; with --dry-run a new temporary folder)",
    )
    gpu.add_argument(
        "--repo", type=Path, default=Path("."), help="the fastclr checkout (default: .)"
    )


def add_methods_parser(actions: argparse._SubParsersAction) -> None:
    from fastclr.bench.method_peers_settings import PeerSettings

    default = PeerSettings()
    methods = actions.add_parser(
        "methods",
        help="train simclr, moco, byol, simsiam, swav with fastclr and with lightly on the same "
        "data, views, epochs, batch and optimizer, once per seed; kNN top-1 and images/s (mean, "
        "range and gain over random-init across seeds) to bench/results/methods/<device>/ (needs "
        "lightly: pip install --no-deps lightly)",
    )
    methods.add_argument(
        "--methods",
        default=",".join(default.methods),
        help=f"comma-separated methods (default: {','.join(default.methods)})",
    )
    methods.add_argument("--data", default=default.data, help=f"dataset (default: {default.data})")
    for name, help_text in (
        ("image_size", "training side in pixels"),
        ("batch_size", "batch"),
        ("epochs", "epochs of each run"),
        ("threads", "torch threads of both sides"),
        ("workers", "loader workers of both sides"),
        ("knn_max_images", "images per kNN split at most"),
    ):
        value = getattr(default, name)
        methods.add_argument(
            "--" + name.replace("_", "-"), type=int, default=value,
            help=f"{help_text} (default: {value})",
        )  # fmt: skip
    methods.add_argument(
        "--seeds",
        "--seed",
        default=",".join(str(seed) for seed in default.seeds),
        help="comma-separated seeds; each sets both sides' initial weights and views, and every "
        f"method runs once per seed on each side (default: {','.join(map(str, default.seeds))}; "
        "--seed N: one seed)",
    )
    methods.add_argument(
        "--fastclr-path",
        default=default.fastclr_path,
        help="root of the fastclr checkout whose `fastclr train` is measured (default: this one)",
    )
    methods.add_argument(
        "--results",
        type=Path,
        default=Path("bench/results/methods"),
        help="results folder (default: bench/results/methods)",
    )


def run_method_peers(args: argparse.Namespace) -> int:
    from fastclr.bench.method_peers_settings import PeerSettings, parse_seeds

    settings = PeerSettings(
        methods=tuple(m for m in args.methods.split(",") if m),
        data=args.data, image_size=args.image_size, batch_size=args.batch_size,
        epochs=args.epochs, seeds=parse_seeds(args.seeds), threads=args.threads, workers=args.workers,
        knn_max_images=args.knn_max_images, fastclr_path=args.fastclr_path,
    )  # fmt: skip
    from fastclr.bench.method_peers import run_all  # torch: only once the settings are good

    path = run_all(settings, args.results, echo=lambda line: print(line, flush=True))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.bench_action == "run":
        return run_benchmarks(args)
    if args.bench_action == "gpu":
        return run_acceptance(args)
    if args.bench_action == "static":
        return static_cli.run(args)
    if args.bench_action == "methods":
        return run_method_peers(args)
    return write_report(args.results, args.out, plots=not args.no_plots)


def run_benchmarks(args: argparse.Namespace) -> int:
    if not (args.bench_dir / "conftest.py").is_file():
        raise UsageError(
            f"no benchmark suites at {args.bench_dir}/: run it from a fastclr checkout, "
            "or pass --bench-dir"
        )
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    command = [sys.executable, "-m", "pytest", str(args.bench_dir), "--benchmark-only", *extra]
    print("+ " + " ".join(command), flush=True)
    status = subprocess.call(command)
    if status == 0 and args.report:
        return write_report(args.bench_dir / "results", None, plots=True)
    return status


def write_report(results: Path, out: Path | None, plots: bool) -> int:
    from fastclr.bench.report import generate

    outcome = generate(results, out, plots=plots)  # unreadable results: UsageError, exit 2
    for warning in outcome.warnings:
        print(f"fastclr bench report: WARNING: {warning}", file=sys.stderr)
    print(
        f"wrote {outcome.markdown}" + (f" and {len(outcome.plots)} plots" if outcome.plots else "")
    )
    return 0


def run_acceptance(args: argparse.Namespace) -> int:
    from fastclr.bench.acceptance import runner
    from fastclr.bench.acceptance.context import make_context

    ctx = make_context(args.dry_run, args.results, args.repo, args.lease)
    return runner.run(
        ctx,
        args.stage,
        args.force,
        echo=lambda line: print(line, flush=True),
        gate=not args.no_gate,
    )
