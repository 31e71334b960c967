"""Launcher environment and launch command line: what torchrun/SLURM set, what we hand to torchrun.

No processes are started here (see test_distributed_loss.py and test_distributed_train.py for those);
the torchrun command line is parsed by torch.distributed.run's own parser, so a flag it does not
know fails here.
"""

import argparse

import pytest
import torch
from torch.distributed.run import parse_args

from fastclr.distributed.env import DistEnv, init_from_env
from fastclr.distributed.launch import (
    WORKER_MODULE,
    add_launch_arguments,
    launcher_arguments,
    maybe_launch,
    worker_device,
    workers_per_node,
)
from fastclr.distributed.launch_env import launch_info, slurm_first_host, slurm_tasks_on_node

TORCHRUN_ENV = {
    "RANK": "3",
    "WORLD_SIZE": "8",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "node0",
    "MASTER_PORT": "29500",
}
SRUN_ENV = {
    "SLURM_PROCID": "5",
    "SLURM_STEP_NUM_TASKS": "7",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "2",
    "SLURM_STEP_TASKS_PER_NODE": "2(x3),1",
    "SLURM_STEP_NODELIST": "gpu[07-09,12]",
    "SLURM_JOB_ID": "123456",
}


def test_torchrun_environment():
    info = launch_info(TORCHRUN_ENV)
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (3, 8, 1, 2)
    assert (info.master_addr, info.master_port, info.source) == ("node0", "29500", "torchrun")


def test_torchrun_wins_over_slurm():
    assert launch_info({**SRUN_ENV, **TORCHRUN_ENV}).source == "torchrun"


def test_srun_step_environment():
    info = launch_info(SRUN_ENV)
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (5, 7, 1, 2)
    assert info.master_addr == "gpu07"
    assert info.master_port == str(20000 + 123456 % 20000)
    assert (
        launch_info({**SRUN_ENV, "MASTER_ADDR": "head", "MASTER_PORT": "1"}).master_addr == "head"
    )


@pytest.mark.parametrize(
    "environ",
    [
        {},
        # a batch script (no srun step): `fastclr train --gpus N` there launches the workers itself
        {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "1"},
        # a one-task srun step
        {**SRUN_ENV, "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"},
    ],
)
def test_not_launched(environ):
    assert launch_info(environ) is None


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [("gpu[07-09,12]", "gpu07"), ("a1,b2", "a1"), ("node[3]", "node3"), ("solo", "solo")],
)
def test_slurm_first_host(nodelist, first):
    assert slurm_first_host(nodelist) == first


def test_slurm_tasks_on_node():
    assert [slurm_tasks_on_node("4(x2),3", i) for i in range(3)] == [4, 4, 3]
    with pytest.raises(ValueError, match="cannot parse"):
        slurm_tasks_on_node("4x2", 0)


def test_single_process_env(monkeypatch):
    for name in [*TORCHRUN_ENV, *SRUN_ENV]:
        monkeypatch.delenv(name, raising=False)
    env = init_from_env(device="cpu")
    assert env == DistEnv() and env.is_main and not env.distributed


def test_single_node_command_line():
    argv = ["train", "--data", "digits", "--nproc", "2"]
    launcher = launcher_arguments(argv, 2, max_restarts=3)
    parsed = parse_args(launcher)
    assert parsed.standalone and parsed.nproc_per_node == "2" and parsed.max_restarts == 3
    assert parsed.module and parsed.training_script == WORKER_MODULE
    assert parsed.training_script_args == argv


def test_multi_node_command_lines():
    elastic = parse_args(launcher_arguments(["train"], 8, nnodes="4", rdzv_endpoint="h:29400"))
    assert not elastic.standalone and elastic.rdzv_backend == "c10d"
    assert (elastic.nnodes, elastic.rdzv_endpoint, elastic.rdzv_id) == ("4", "h:29400", "fastclr")
    fixed = parse_args(
        launcher_arguments(["train"], 8, nnodes="2", node_rank=1, rdzv_endpoint="h:29400")
    )
    assert fixed.rdzv_backend == "static" and fixed.node_rank == 1
    with pytest.raises(ValueError, match="--rdzv-endpoint"):
        launcher_arguments(["train"], 8, nnodes="2")


def test_worker_counts():
    assert workers_per_node(0, 0) == 1 and workers_per_node(0, 3) == 3
    with pytest.raises(ValueError, match="not both"):
        workers_per_node(2, 2)
    too_many = torch.cuda.device_count() + 1
    with pytest.raises(ValueError, match="CUDA device"):
        workers_per_node(too_many, 0)


def parsed(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_launch_arguments(parser)
    return parser.parse_args(list(flags))


def test_launched_worker_trains_itself_and_leaves_args_alone(monkeypatch):
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    args = parsed("--max-restarts", "1")
    before = vars(args).copy()
    for restarts in ("0", "1"):  # the restart resume rule lives in fastclr.train.config
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", restarts)
        assert maybe_launch(args, gpus=0, nproc=2, argv=["train", "--nproc", "2"]) is None
        assert vars(args) == before


def test_one_process_is_not_launched(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert maybe_launch(parsed(), gpus=0, nproc=0, argv=["train"]) is None
    assert maybe_launch(parsed(), gpus=0, nproc=1, argv=["train"]) is None


def test_worker_device():
    assert worker_device(0, 2, "auto") == "cpu"
    assert worker_device(2, 0, "cuda:0") == "cuda:0"
    assert worker_device(0, 0, "auto") is None
