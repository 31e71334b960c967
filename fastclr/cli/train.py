"""`fastclr train`: self-supervised pre-training (SimCLR by default; --method moco, byol, simsiam,
swav). With no arguments: SimCLR on digits on this machine in minutes."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """Self-supervised pre-training: --method simclr (default; Chen et al. 2020),
moco (MoCo v2: SGD lr 0.03, tau 0.2, queue 65536, key momentum 0.999), byol (LARS lr 0.2, target
momentum 0.996 -> 1, heads 4096 -> 256), simsiam (SGD lr 0.05, fixed-lr predictor 512, projector
3 x 2048), swav (LARS lr 0.3, 3000 prototypes, Sinkhorn epsilon 0.05, tau 0.1, multi-crop). Each
method brings its paper's defaults (lr per batch of 256); docs/methods.md has them all. With no
arguments it trains SimCLR with a ResNet-18 on scikit-learn's digits (bundled, nothing downloaded)
and reports kNN top-1 before and after. Settings come from the defaults, then --config FILE or a
recipe name (simclr-imagenet, moco-v2-imagenet, ...), then flags. Each flag's help gives the
recommended value."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from fastclr.distributed.launch import add_launch_arguments
    from fastclr.train.config import add_train_arguments

    parser = subparsers.add_parser(
        "train",
        help="self-supervised pre-training: simclr | moco | byol | simsiam | swav",
        description=DESCRIPTION,
    )
    add_train_arguments(parser)
    add_launch_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config once; then either start the workers (--gpus/--nproc N, each re-runs this
    command line) or train in this process. A UsageError reaches fastclr.cli.main (exit 2)."""
    from fastclr.distributed.env import init_from_env, shutdown
    from fastclr.distributed.launch import maybe_launch, worker_device
    from fastclr.distributed.launch_env import launch_info
    from fastclr.errors import UsageError
    from fastclr.train.config import config_from_args, resolve_config
    from fastclr.train.loop import train
    from fastclr.train.run import NonFiniteLossError

    cfg, notes = resolve_config(config_from_args(args))
    status = maybe_launch(args, gpus=cfg.gpus, nproc=cfg.nproc)
    if status is not None:
        return status
    info = launch_info()
    if info is None or info.rank == 0:  # the workers resolved the same notes: rank 0 says them
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    env = init_from_env(device=worker_device(cfg.gpus, cfg.nproc, cfg.device))
    try:
        train(cfg, env)
    except NonFiniteLossError as error:
        print(f"fastclr train: error: {error}", file=sys.stderr)
        return 1
    except UsageError:
        raise
    except ValueError as error:  # the data layer's bad-input errors (a folder, a dataset name)
        raise UsageError(str(error)) from error
    finally:
        shutdown()
    return 0
