"""The trainer end to end on CPU: a smoke run through the CLI, exact resume, non-finite stop.

Runs are tiny: ResNet-18 (CIFAR stem) at 8 px, batches of 8 of 24 synthetic images (3 steps per
epoch), a few steps each.
"""

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision

from fastclr.checkpoint import list_checkpoints, load_checkpoint, load_latest
from fastclr.cli.main import main
from fastclr.data.loader import choose_backend
from fastclr.errors import UsageError
from fastclr.train.config import TrainConfig
from fastclr.train.loop import train

TINY = [
    "--data", "synthetic:24", "--image-size", "8", "--batch-size", "8", "--device", "cpu",
    "--loader", "torch", "--workers", "0", "--log-every", "1", "--precision", "fp32",
]  # fmt: skip


def step_losses(out: Path) -> dict[int, float]:
    """step -> loss from the run's log.jsonl (a resumed run appends to the same file)."""
    losses = {}
    for line in (out / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "step":
            losses[record["step"]] = record["loss"]
    return losses


def test_cli_smoke_train_eval_export(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out), "--knn-k", "5"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 0.3 and config["stem"] == "cifar" and config["image_size"] == 8
    losses = step_losses(out)
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values())
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    knn = [r["top1"] for r in records if r["kind"] == "knn"]
    assert len(knn) == 1 and 0 <= knn[0] <= 100
    end = [r for r in records if r["kind"] == "run" and r.get("event") == "end"][0]
    assert end["images_per_s"] > 0 and end["knn_final"] is not None
    (checkpoint,) = list_checkpoints(out)
    state = load_checkpoint(checkpoint)
    assert state["config"] == config and (state["step"], state["epoch"]) == (3, 1)

    assert main(["eval", "knn", "--checkpoint", str(checkpoint), "--k", "5"]) == 0
    assert main(["eval", "linear", "--checkpoint", str(checkpoint), "--epochs", "5"]) == 0
    printed = capsys.readouterr().out
    assert "kNN (k=5, T=0.1) top-1" in printed and "linear probe (5 epochs) top-1" in printed

    exported = tmp_path / "backbone.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(exported)]) == 0
    plain = torchvision.models.resnet18()
    plain.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    plain.maxpool = torch.nn.Identity()
    plain.fc = torch.nn.Identity()
    plain.load_state_dict(torch.load(exported, weights_only=True))  # strict: every key matches
    trained = state["model"]
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, trained[f"backbone.{name}"])


LOADERS = ["torch"] + (
    ["dali-cpu"] if choose_backend("auto", torch.device("cpu")) != "torch" else []
)


@pytest.mark.parametrize("loader", LOADERS)
def test_resume_reproduces_uninterrupted_run_exactly(tmp_path, loader):
    """7 steps straight == 4 steps, stop, resume for 3 more: the same losses bit for bit and the
    same final weights. 3 steps per epoch, so the stop is mid-epoch and the resumed run crosses
    an epoch boundary; checkpoints every 2 steps too."""
    base = TINY + ["--epochs", "3", "--checkpoint-every", "2", "--knn-every", "0",
                   "--loader", loader]  # fmt: skip
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main(["train", *base, "--out", str(straight), "--max-steps", "7"]) == 0
    assert main(["train", *base, "--out", str(interrupted), "--max-steps", "4"]) == 0
    assert load_latest(interrupted)[1]["step_in_epoch"] == 1  # stopped inside epoch 2
    assert main(["train", *base, "--out", str(interrupted), "--max-steps", "7"]) == 0

    expected, got = step_losses(straight), step_losses(interrupted)
    assert sorted(expected) == list(range(1, 8))
    assert got == expected  # bitwise: float equality of every logged loss
    final_a, final_b = load_latest(straight)[1], load_latest(interrupted)[1]
    assert final_a["step"] == final_b["step"] == 7
    for name, tensor in final_a["model"].items():
        assert torch.equal(tensor, final_b["model"][name]), name
    for key, value in final_a["optimizer"]["state"].items():
        assert torch.equal(
            value["momentum_buffer"], final_b["optimizer"]["state"][key]["momentum_buffer"]
        )


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    base = TINY + ["--epochs", "2", "--knn-every", "0", "--out", str(out), "--optimizer", "sgd"]
    assert main(["train", *base, "--max-steps", "2"]) == 0
    # A vanishing temperature blows the logits up: the weights are non-finite after one step.
    assert main(["train", *base, "--temperature", "1e-30"]) == 1
    message = capsys.readouterr().err
    for hint in ("--lr", "--precision fp32", "--temperature", "last good checkpoint"):
        assert hint in message
    (checkpoint,) = list_checkpoints(out)
    state = load_checkpoint(checkpoint)
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_fresh_run_refuses_folder_of_another_run(tmp_path):
    cfg = TrainConfig(
        data="synthetic:24", image_size=8, batch_size=8, epochs=1, max_steps=1, device="cpu",
        loader="torch", workers=0, knn_every=0, out=str(tmp_path), precision="fp32",
    )  # fmt: skip
    train(cfg)
    cfg.resume = "none"
    with pytest.raises(UsageError, match="--resume auto"):
        train(cfg)
    cfg.resume, cfg.arch = "auto", "resnet50"
    with pytest.raises(UsageError, match="arch: resnet18 -> resnet50"):
        train(cfg)
