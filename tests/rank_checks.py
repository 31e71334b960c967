"""Run named checks on a real gloo process group of `world` spawned CPU ranks.

A check is `fn(seed, rank, *args)`, a module-level function (spawned ranks import it by name) that
raises on failure. Every rank runs every check and reports {name: None if it passed, else the
traceback}, so one failing case neither hides the others nor hangs the group.
"""

import datetime
import os
import socket
import tempfile
import traceback
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

Checks = dict[str, tuple[Callable[..., None], tuple]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, seed: int, checks: Checks) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    results: dict[str, str | None] = {}
    try:
        for name, (check, args) in checks.items():
            try:
                check(seed, rank, *args)
                results[name] = None
            except Exception:
                results[name] = traceback.format_exc()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_on_ranks(checks: Checks, *, seed: int, world: int) -> list[dict[str, str | None]]:
    """Each rank's {check name: None | traceback}, in rank order."""
    with tempfile.TemporaryDirectory() as out_dir:
        args = (world, free_port(), out_dir, seed, checks)
        mp.spawn(_worker, args=args, nprocs=world, join=True)
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(world)]
