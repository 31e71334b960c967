"""Whether a launcher started this process, and its ranks: read from the environment only (no
torch), so `fastclr train` can decide to launch workers before torch is imported.

Two launchers are recognised, in this order:
  - torchrun / torch.distributed.run (also `fastclr train --gpus N`, which uses it): RANK, WORLD_SIZE,
    LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
  - an srun job step with more than one task: SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID,
    SLURM_STEP_TASKS_PER_NODE, SLURM_NODEID, SLURM_STEP_NODELIST (its first host is the master unless
    MASTER_ADDR is set; MASTER_PORT defaults to a port derived from SLURM_JOB_ID). A batch script
    itself (no srun step) is not a distributed launch: `fastclr train --gpus N` there starts the
    workers itself.
Anything else is a single process.
"""

import os
import re
from dataclasses import dataclass

DEFAULT_SLURM_PORT_BASE = 20000


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
