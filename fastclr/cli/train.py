"""`fastclr train`: SimCLR pre-training. With no arguments: digits on this machine in minutes."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """Train SimCLR. With no arguments it trains a ResNet-18 on scikit-learn's digits
(bundled, nothing downloaded) and reports kNN top-1 before and after. Settings come from the
defaults, then --config FILE, then flags. Each flag's help gives the recommended value."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from fastclr.distributed.launch import add_launch_arguments
    from fastclr.train.config import add_train_arguments

    parser = subparsers.add_parser(
        "train",
        help="SimCLR pre-training (default: digits, a few CPU minutes)",
        description=DESCRIPTION,
    )
    add_train_arguments(parser)
    add_launch_arguments(parser)  # [dist] --gpus, --nproc, --nnodes, --max-restarts, ...
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastclr.distributed.env import init_from_env, shutdown
    from fastclr.distributed.launch import maybe_launch, worker_device
    from fastclr.train.config import config_from_args
    from fastclr.train.loop import NonFiniteLossError, train

    try:
        # [dist] --gpus N / --nproc N: start N workers that each re-run this command line.
        cfg = config_from_args(args)
        status = maybe_launch(args, cfg)
        if status is not None:
            return status
        # A restarted worker may have had --resume switched to auto: resolve the config again.
        cfg = config_from_args(args)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    env = init_from_env(device=worker_device(args, cfg))
    try:
        train(cfg, env)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        shutdown()
    return 0
