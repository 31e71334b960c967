"""The methods on a real 2-rank gloo group: MoCo's shuffle BN gives every image its own key back,
every rank's queue holds every rank's keys in the same order; and `fastclr train --nproc 2` runs
moco (shuffle BN, gathered queue), byol (SyncBatchNorm heads) and swav (distributed Sinkhorn, the
gathered queue split among ranks) end to end."""

import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from fastclr.checkpoint import load_latest
from fastclr.methods.moco import MoCo
from tests.rank_checks import run_on_ranks
from tests.test_methods_train import NEEDS_SWAV_OPS, settings

MOCO = {"arch": "resnet18", "stem": "cifar", "image_size": 8, "proj_hidden": 16, "queue_size": 8}


def check_moco_shuffle_bn_and_queue(seed: int, rank: int) -> None:
    torch.manual_seed(seed)  # the same initial weights on every rank
    moco = MoCo(MOCO).eval()  # BN from running statistics: a key depends on its image only
    torch.manual_seed(seed + 1 + rank)
    x1, x2 = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        expected = F.normalize(moco.key_head(moco.key_backbone(x1)), dim=1)
        torch.testing.assert_close(moco._keys_of(x1, step=7), expected, rtol=1e-5, atol=1e-6)
    moco.train()
    moco([x1, x2], torch.zeros(3, dtype=torch.long), 0).backward()
    mine = moco._keys.clone()  # [6, D]
    moco.after_step(0, 10)
    everyone = [torch.empty_like(mine) for _ in range(2)]
    dist.all_gather(everyone, mine)
    # 12 keys (rank order) into 8 slots from 0: the last 8 land in slots 4..7, 0..3
    assert torch.equal(moco.queue[[4, 5, 6, 7, 0, 1, 2, 3]], torch.cat(everyone)[4:])
    queues = [torch.empty_like(moco.queue) for _ in range(2)]
    dist.all_gather(queues, moco.queue)
    assert torch.equal(queues[0], queues[1]) and moco.queue_ptr.item() == 12 % 8


def test_moco_shuffle_bn_and_queue_on_two_ranks():
    results = run_on_ranks({"moco": (check_moco_shuffle_bn_and_queue, ())}, seed=3, world=2)
    for rank, outcome in enumerate(results):
        assert outcome["moco"] is None, f"rank {rank}:\n{outcome['moco']}"


@pytest.mark.parametrize("method", ["moco", "byol", pytest.param("swav", marks=NEEDS_SWAV_OPS)])
def test_two_process_training_runs(method, tmp_path):
    out = tmp_path / "run"
    args = [*settings(method), "--nproc", "2", "--max-steps", "2", "--knn-every", "0"]
    command = [sys.executable, "-m", "fastclr.cli.main", "train", *args, "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    path, state = load_latest(out)
    assert state["step"] == 2 and all(torch.isfinite(t).all() for t in state["model"].values())
