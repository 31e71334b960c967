"""`fastclr plot RUN`: the run's loss, learning rate and kNN curves as RUN/curves.png."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot", help="draw a training run's loss, learning rate and kNN curves as a PNG"
    )
    parser.add_argument("run", help="a run folder of `fastclr train` (holds log.jsonl)")
    parser.add_argument("--out", default=None, help="PNG path (default: RUN/curves.png)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastclr.plots import plot_training_run

    folder = Path(args.run)
    png = plot_training_run(folder / "log.jsonl", args.out or folder / "curves.png")
    print(png)
    return 0
