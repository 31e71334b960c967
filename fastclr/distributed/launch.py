"""`fastclr train --gpus N`: start N workers through torch.distributed.run (the engine behind torchrun).

The launcher process runs PyTorch's elastic agent in-process; every worker re-runs the same command
line, `python -m fastclr.cli.main train ...`, with RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR set,
so the worker sees a launched environment (fastclr.distributed.launch_env.launch_info) and trains instead of
launching again. A run started by torchrun or srun directly is recognised the same way.

    one node        fastclr train --gpus 8                    -> torchrun --standalone --nproc_per_node 8
    CPU workers     fastclr train --nproc 2                   (gloo; tests, machines without GPUs)
    several nodes   fastclr train --gpus 8 --nnodes 4 --rdzv-endpoint HOST:PORT      on every node
                    (c10d rendezvous; add --node-rank K on each node for fixed node ranks: static)
    faults          --max-restarts 3: a failed worker restarts the whole group, which resumes from the
                    newest checkpoint in --out (fastclr.train.config.resolve_config: whatever
                    --resume said, once --out holds a checkpoint)
"""

import argparse
import os
import site
import sys
from pathlib import Path

from fastclr.distributed.launch_env import launch_info
from fastclr.errors import UsageError

# Worker entry point: the console script's module, run with `python -m`.
WORKER_MODULE = "fastclr.cli.main"


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The multi-node flags of `fastclr train` (each help names the recommended value). The worker
    counts --gpus/--nproc are settings of the run (fastclr.train.config; a config file may set them)."""
    group = parser.add_argument_group("multi-GPU / multi-node (torch.distributed)")
    group.add_argument(
        "--nnodes",
        default="1",
        help="number of nodes, or MIN:MAX for an elastic job (recommended: 1; multi-node also "
        "needs --rdzv-endpoint)",
    )
    group.add_argument(
        "--node-rank",
        type=int,
        default=None,
        help="this node's rank for fixed (static) rendezvous; leave unset for c10d rendezvous, "
        "which assigns ranks and supports whole-group restarts (recommended: unset)",
    )
    group.add_argument(
        "--rdzv-endpoint",
        default=None,
        help="HOST:PORT of the rendezvous on the first node, the same on every node "
        "(multi-node only; recommended port 29400)",
    )
    group.add_argument(
        "--rdzv-id",
        default="fastclr",
        help="job id shared by all nodes of one run (recommended: the scheduler's job id)",
    )
    group.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="restart the worker group this many times after a failure; it resumes from the last "
        "checkpoint (recommended: 3 for long runs)",
    )


def workers_per_node(gpus: int, nproc: int) -> int:
    """How many workers --gpus/--nproc ask for on this node (1 when neither is given)."""
    if gpus < 0 or nproc < 0:
        raise UsageError(f"--gpus/--nproc must be >= 0, got {gpus}/{nproc}")
    if gpus and nproc:
        raise UsageError("give --gpus N (GPU workers) or --nproc N (CPU workers), not both")
    if gpus:
        import torch

        available = torch.cuda.device_count()
        if gpus > available:
            raise UsageError(
                f"--gpus {gpus} but this node has {available} CUDA device(s): use --gpus "
                f"{available}" + (" or --nproc N for CPU workers" if available == 0 else "")
            )
    return max(gpus, nproc, 1)


def worker_device(gpus: int, nproc: int, device: str) -> str | None:
    """The device a worker trains on: CPU for --nproc workers, else --device (None for "auto":
    GPU LOCAL_RANK when CUDA is available)."""
    if nproc and not gpus:
        return "cpu"
    return None if device == "auto" else device


def launcher_arguments(
    argv: list[str],
    nproc_per_node: int,
    *,
    nnodes: str = "1",
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "fastclr",
    max_restarts: int = 0,
) -> list[str]:
    """torch.distributed.run's command line that runs `python -m fastclr.cli.main *argv` per worker."""
    launcher = [f"--nproc_per_node={nproc_per_node}", f"--max_restarts={max_restarts}"]
    if str(nnodes) == "1" and rdzv_endpoint is None:
        launcher.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise UsageError(
                f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (a port on the first node, "
                "the same on every node)"
            )
        launcher += [
            f"--nnodes={nnodes}",
            f"--rdzv_endpoint={rdzv_endpoint}",
            f"--rdzv_id={rdzv_id}",
        ]
        if node_rank is None:
            launcher.append("--rdzv_backend=c10d")
        else:
            launcher += ["--rdzv_backend=static", f"--node_rank={node_rank}"]
    # "--" ends torchrun's own options: a worker flag such as --nproc must not be read as an
    # abbreviation of torchrun's --nproc_per_node.
    return [*launcher, "--module", "--", WORKER_MODULE, *argv]


def worker_environment(nproc_per_node: int) -> None:
    """Environment the workers inherit: fastclr importable, CPU threads split between workers."""
    package_parent = str(Path(__file__).resolve().parents[2])
    if package_parent not in site.getsitepackages() + [site.getusersitepackages()]:
        paths = [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # torchrun would set 1 thread per worker; CPU workers train faster with their share of cores.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))


def launch(argv: list[str], nproc_per_node: int, **launcher_options) -> int:
    """Run `fastclr *argv` in nproc_per_node workers under the elastic agent; the exit status."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    worker_environment(nproc_per_node)
    try:
        run(parse_args(launcher_arguments(argv, nproc_per_node, **launcher_options)))
    except ChildFailedError as err:
        print(err.format_msg(), file=sys.stderr)
        return 1
    return 0


def maybe_launch(
    args: argparse.Namespace, *, gpus: int, nproc: int, argv: list[str] | None = None
) -> int | None:
    """Called first by `fastclr train`: start the workers and return their exit status, or None when
    this process should train itself (no --gpus/--nproc above 1, or already a launched worker).

    args: the parsed command line, with the flags of add_launch_arguments (read, never changed).
    gpus, nproc: the resolved run config's worker counts. argv: the command line after the program
    name (default sys.argv[1:], which starts with "train"); each worker re-runs it unchanged.
    """
    if launch_info() is not None:
        return None
    count = workers_per_node(gpus, nproc)
    nnodes = str(getattr(args, "nnodes", "1"))
    max_restarts = getattr(args, "max_restarts", 0)
    if max_restarts < 0:
        raise UsageError(f"--max-restarts {max_restarts}: must be >= 0")
    if count == 1 and nnodes == "1" and max_restarts == 0:
        return None
    argv = list(sys.argv[1:] if argv is None else argv)
    if "train" not in argv:
        raise UsageError(
            "--gpus/--nproc re-run the command line in every worker, but it does not contain the "
            f"'train' subcommand ({argv}); start it as `fastclr train ...` or pass argv"
        )
    return launch(
        argv,
        count,
        nnodes=nnodes,
        node_rank=getattr(args, "node_rank", None),
        rdzv_endpoint=getattr(args, "rdzv_endpoint", None),
        rdzv_id=getattr(args, "rdzv_id", "fastclr"),
        max_restarts=max_restarts,
    )
