"""Who am I in the job: rank, world size and device, read from what torchrun or SLURM set.

Two launchers are recognised, in this order:
  - torchrun / torch.distributed.run (also `fastclr train --gpus N`, which uses it): RANK, WORLD_SIZE,
    LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
  - an srun job step with more than one task: SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID,
    SLURM_STEP_TASKS_PER_NODE, SLURM_NODEID, SLURM_STEP_NODELIST (its first host is the master unless
    MASTER_ADDR is set; MASTER_PORT defaults to a port derived from SLURM_JOB_ID). A batch script
    itself (no srun step) is not a distributed launch: `fastclr train --gpus N` there starts the
    workers itself.
Anything else is a single process. Backend: NCCL when CUDA is available, gloo otherwise.
"""

import os
import re
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

DEFAULT_SLURM_PORT_BASE = 20000


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


@dataclass(frozen=True)
class LaunchInfo:
    """Ranks as a launcher set them in the environment, before any process group exists."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str | None
    master_port: str | None
    source: str  # "torchrun" or "slurm"


def slurm_first_host(nodelist: str) -> str:
    """First host of a SLURM hostlist: 'gpu[07-09,12],cpu1' -> 'gpu07'."""
    match = re.match(r"([^,\[]*)(?:\[([^\],]+))?", nodelist.strip())
    prefix, ranges = match.group(1), match.group(2)
    return prefix + ranges.split("-")[0] if ranges else prefix


def slurm_tasks_on_node(tasks_per_node: str, node_id: int) -> int:
    """Tasks on node `node_id` from SLURM's compact form: '4(x2),3' -> [4, 4, 3]."""
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise ValueError(f"cannot parse SLURM tasks per node {tasks_per_node!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts[node_id]


def launch_info(environ: dict[str, str] | None = None) -> LaunchInfo | None:
    """The launcher-set ranks of this process, or None when no multi-process launcher started it."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        return LaunchInfo(
            rank=int(env["RANK"]),
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
            master_addr=env.get("MASTER_ADDR"),
            master_port=env.get("MASTER_PORT"),
            source="torchrun",
        )
    if "SLURM_PROCID" in env and int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        node_id = int(env.get("SLURM_NODEID", "0"))
        world = int(env["SLURM_STEP_NUM_TASKS"])
        tasks_per_node = env.get("SLURM_STEP_TASKS_PER_NODE")
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        port = env.get("MASTER_PORT")
        if port is None and "SLURM_JOB_ID" in env:
            port = str(DEFAULT_SLURM_PORT_BASE + int(env["SLURM_JOB_ID"]) % 20000)
        return LaunchInfo(
            rank=int(env["SLURM_PROCID"]),
            world_size=world,
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            local_world_size=slurm_tasks_on_node(tasks_per_node, node_id) if tasks_per_node else 1,
            master_addr=env.get("MASTER_ADDR")
            or (slurm_first_host(nodelist) if nodelist else None),
            master_port=port,
            source="slurm",
        )
    return None


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
