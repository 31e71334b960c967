"""`fastclr train --method M` end to end on CPU for every method: a run with the kNN monitor,
`fastclr eval knn` and `fastclr export` of its backbone, exact resume (momentum encoders, queue and
its pointer included), more views and SupCon, and the refusals of settings a method does not read.

Runs are tiny: ResNet-18 (CIFAR stem) at 8 px, batches of 8 of 24 synthetic images (3 steps per
epoch), small heads.
"""

import dataclasses
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from fastclr.checkpoint import list_checkpoints, load_checkpoint, load_latest
from fastclr.cli.main import main
from fastclr.data import AugmentConfig, build_train_loader
from fastclr.errors import UsageError
from fastclr.train.config import TrainConfig, resolve_config
from fastclr.train.run import augment_config
from tests.test_train_loop import TINY, step_losses

# SwAV's Sinkhorn and loss live in fastclr.ops (sinkhorn.py, swav_loss.py), merged separately.
HAS_SWAV_OPS = importlib.util.find_spec("fastclr.ops.sinkhorn") is not None
NEEDS_SWAV_OPS = pytest.mark.skipif(not HAS_SWAV_OPS, reason="fastclr.ops.sinkhorn not merged")
# Views beyond two (and multi-crop) need the loader's AugmentConfig.num_views / local_views.
HAS_VIEWS = {"num_views", "local_views"} <= {f.name for f in dataclasses.fields(AugmentConfig)}
NEEDS_VIEWS = pytest.mark.skipif(not HAS_VIEWS, reason="the loader has no num_views yet")
METHODS = ["simclr", "moco", "byol", "simsiam", pytest.param("swav", marks=NEEDS_SWAV_OPS)]
SMALL_HEADS = {
    "simclr": [],
    "moco": ["--queue-size", "16", "--proj-hidden", "32"],
    "byol": ["--proj-hidden", "32", "--pred-hidden", "16", "--proj-dim", "16"],
    "simsiam": ["--proj-hidden", "32", "--pred-hidden", "16", "--proj-dim", "32"],
    "swav": ["--proj-hidden", "32", "--prototypes", "6", "--queue-size", "8"],
}


def settings(method: str) -> list[str]:
    return [*TINY, "--method", method, *SMALL_HEADS[method]]


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_monitors_evaluates_and_exports(method, tmp_path):
    out = tmp_path / "run"
    assert (
        main(["train", *settings(method), "--epochs", "1", "--out", str(out), "--knn-k", "5"]) == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == method
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "step"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert [r for r in records if r["kind"] == "knn"][-1]["top1"] is not None
    (checkpoint,) = list_checkpoints(out)
    assert main(["eval", "knn", "--checkpoint", str(out), "--k", "5"]) == 0
    exported = tmp_path / "backbone.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(exported)]) == 0
    weights = torch.load(exported, weights_only=True)
    trained = load_checkpoint(checkpoint)["model"]
    assert weights and all(torch.equal(t, trained[f"backbone.{n}"]) for n, t in weights.items())


@pytest.mark.parametrize("method", ["moco", "byol", pytest.param("swav", marks=NEEDS_SWAV_OPS)])
def test_resume_restores_momentum_encoder_and_queue_exactly(method, tmp_path):
    """5 steps straight == 2 steps, stop, resume for 3 more (across an epoch end): the same
    losses bit for bit and the same state: online and target weights, queue, pointer, optimizer."""
    base = [*settings(method), "--epochs", "2", "--knn-every", "0", "--checkpoint-every", "2"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main(["train", *base, "--out", str(straight), "--max-steps", "5"]) == 0
    assert main(["train", *base, "--out", str(interrupted), "--max-steps", "2"]) == 0
    assert main(["train", *base, "--out", str(interrupted), "--max-steps", "5"]) == 0
    assert step_losses(straight) == step_losses(interrupted)
    a, b = load_latest(straight)[1], load_latest(interrupted)[1]
    assert a["step"] == b["step"] == 5
    targets = [k for k in a["model"] if k.startswith(("key_", "target_", "queue", "prototypes"))]
    assert targets and a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(
            value["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"]
        )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--method", "byol", "--temperature", "0.1"],
            "--temperature 0.1: --method byol does not use it",
        ),
        (
            ["--method", "simsiam", "--queue-size", "8"],
            "--queue-size 8: --method simsiam does not use it",
        ),
        (["--method", "moco", "--loss", "supcon"], "--loss supcon: --method moco does not use it"),
        (
            ["--method", "byol", "--views", "3"],
            "--views 3: --method byol trains on exactly 2 views",
        ),
        (
            ["--method", "moco", "--queue-size", "25"],
            "--queue-size 25 is larger than the dataset (24",
        ),
    ],
)
def test_settings_a_method_cannot_use_exit_2(flags, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fastclr.cli.main", "train", *TINY, *flags, "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(("size", "byol_blur"), [(96, (1.0, 0.1)), (32, (0.0, 0.0))])
def test_byol_loader_draws_asymmetric_views_simclr_alike_ones(size, byol_blur):
    """The loader the trainer builds: BYOL's views differ (blur 1.0 / 0.1 from 96 px on, none
    below; solarization 0 / 0.2 at every size), SimCLR's two are the same draw."""
    specs = {}
    for method in ("byol", "simclr"):
        cfg = TrainConfig(method=method, data="synthetic:24", image_size=size, loader="torch")
        cfg = resolve_config(cfg, restart_count=0)[0]
        loader = build_train_loader(
            cfg.data, batch_size=8, image_size=size, loader="torch", num_workers=0,
            augment=augment_config(cfg),
        )  # fmt: skip
        specs[method] = loader.augment.view_specs()
        assert [v.shape for v in next(iter(loader))[:2]] == [(8, 3, size, size)] * 2
    assert tuple(s.blur_p for s in specs["byol"]) == byol_blur
    assert tuple(s.solarize_p for s in specs["byol"]) == (0.0, 0.2)
    first, second = specs["simclr"]
    assert first == second and first.solarize_p == 0.0
    assert first.blur_p == (0.5 if size >= 96 else 0.0)


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--method", "simclr", "--views", "3"], marks=NEEDS_VIEWS),
        pytest.param(["--method", "simclr", "--loss", "supcon"]),
        pytest.param(
            ["--method", "swav", *SMALL_HEADS["swav"], "--local-views", "2", "--local-size", "8"],
            marks=[NEEDS_VIEWS, NEEDS_SWAV_OPS],
        ),
    ],
    ids=["simclr-3-views", "supcon", "swav-multi-crop"],
)
def test_more_views_and_supcon_train(flags, tmp_path):
    args = [*TINY, *flags, "--max-steps", "2", "--knn-every", "0", "--out", str(tmp_path)]
    assert main(["train", *args]) == 0
    assert len(step_losses(tmp_path)) == 2


@NEEDS_SWAV_OPS
def test_swav_prototypes_frozen_then_trained_and_batch_check(tmp_path):
    from fastclr.methods.registry import build_method

    swav = build_method(
        {"method": "swav", "arch": "resnet18", "stem": "cifar", "image_size": 8,
         "proj_hidden": 16, "prototypes": 5, "freeze_prototypes_steps": 2}
    )  # fmt: skip
    optimizer = torch.optim.SGD(swav.parameters(), lr=0.5)
    weights = []
    for step in range(3):
        views = [torch.randn(6, 3, 8, 8) for _ in range(2)]
        loss = swav(views, torch.zeros(6, dtype=torch.long), step)
        normalized = swav.prototypes.weight.detach().clone()
        torch.testing.assert_close(normalized.norm(dim=1), torch.ones(5))
        optimizer.zero_grad()
        loss.backward()
        swav.after_backward(step)
        optimizer.step()
        weights.append((normalized, swav.prototypes.weight.detach().clone()))
    assert all(torch.equal(before, after) for before, after in weights[:2])  # frozen
    assert not torch.equal(*weights[2])  # step 2: trained
    with pytest.raises(UsageError, match="--batch-size 4 .* below the 5 prototypes"):
        swav.check_data(num_images=100, batch_size=4)
