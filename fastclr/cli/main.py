"""Entry point of the `fastclr` console script: one subcommand per module in COMMAND_MODULES.

Each module defines `register(subparsers)`, which adds its subparser and sets `func=run`, where
`run(args) -> int` is the exit status; a `fastclr.errors.UsageError` raised anywhere below becomes
one line on stderr and exit status 2. Modules are imported only to build the parser: heavy imports
(torch kernels, DALI) stay inside `run`.
"""

import argparse
import importlib
import sys

from fastclr import __version__
from fastclr.errors import UsageError

COMMAND_MODULES = (
    "fastclr.cli.info",
    "fastclr.cli.bench",
    "fastclr.cli.train",
    "fastclr.cli.eval",
    "fastclr.cli.export",
    "fastclr.cli.plot",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastclr",
        description="Fast, memory-efficient, verified SimCLR training.",
    )
    parser.add_argument("--version", action="version", version=f"fastclr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UsageError as error:
        # A bad input the user can fix: one line, no traceback (see fastclr/errors.py).
        print(f"fastclr {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
