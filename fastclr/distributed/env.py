"""Who am I in the job: rank, world size and device, and the process group the launcher prepared.

The launcher's ranks come from fastclr.distributed.launch_env (torchrun or SLURM, read from the
environment). Backend: NCCL when CUDA is available, gloo otherwise.
"""

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

from fastclr.distributed.launch_env import LaunchInfo, launch_info


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job. The single-process default is rank 0 of 1 on CPU."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, prints and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def rendezvous_store(info: LaunchInfo) -> dist.Store:
    """The key-value store the process group meets in, with a prefix per restart attempt.

    Under torchrun the elastic agent hosts the store (TORCHELASTIC_USE_AGENT_STORE) and keeps it
    across restarts of the worker group; measured on torch 2.14, a restarted group that meets
    without a prefix can read the dead workers' gloo addresses ("Connection refused", or a hang if
    the address still accepts). Otherwise (srun) rank 0 hosts it.
    """
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        info.master_addr,
        int(info.master_port),
        info.world_size,
        is_master=not agent_hosts and info.rank == 0,
        timeout=default_pg_timeout,
        multi_tenant=not agent_hosts,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"fastclr/attempt_{attempt}", store)


def init_from_env(backend: str | None = None, device: str | None = None) -> DistEnv:
    """Join the process group the launcher prepared (torchrun or srun), or describe a single process.

    Args:
        backend: "nccl" or "gloo"; default NCCL when CUDA is available, else gloo.
        device: "cpu" forces CPU workers even with GPUs (then gloo); None or "auto": GPU LOCAL_RANK
            when CUDA is available, else CPU. A single process gets `device` as given, else "cuda"
            if available, else "cpu".

    Returns:
        DistEnv. Idempotent: if the default process group exists already, it is described, not re-made.
    """
    info = launch_info()
    device = None if device == "auto" else device
    use_cuda = torch.cuda.is_available() and (device is None or not device.startswith("cpu"))
    if info is None or info.world_size == 1:
        chosen = torch.device(device or ("cuda" if use_cuda else "cpu"))
        return DistEnv(device=chosen)
    if use_cuda:
        if info.local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {info.local_rank} has no GPU: this node has "
                f"{torch.cuda.device_count()}; start at most that many workers per node "
                "(--gpus) or use --device cpu"
            )
        chosen = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if not dist.is_initialized():
        if info.master_addr is None or info.master_port is None:
            raise RuntimeError(
                f"{info.source} set the ranks but no rendezvous address: export MASTER_ADDR and "
                "MASTER_PORT (the host and a free port of rank 0)"
            )
        dist.init_process_group(
            backend or ("nccl" if use_cuda else "gloo"),
            store=rendezvous_store(info),
            rank=info.rank,
            world_size=info.world_size,
        )
    return DistEnv(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=info.local_rank,
        local_world_size=info.local_world_size,
        device=chosen,
    )


def shutdown() -> None:
    """Destroy the default process group if this process made one (end of training)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
