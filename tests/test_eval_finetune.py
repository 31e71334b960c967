"""Fine-tune vs scratch: the augmentation, precise BN, the training loop and the CLI end to end."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from fastclr.errors import UsageError
from fastclr.eval.finetune import (
    FinetuneConfig,
    LabelledSplits,
    finetune,
    random_crop_flip,
    recompute_bn_statistics,
)


def test_full_crop_without_flip_is_the_identity_and_flips_mirror():
    images = torch.randn(6, 3, 9, 9)
    same = random_crop_flip(images, 1.0, False, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, images, atol=1e-5, rtol=0)
    flipped = random_crop_flip(images, 1.0, True, torch.Generator().manual_seed(0))
    for out, original in zip(flipped, images, strict=True):
        assert torch.allclose(out, original, atol=1e-5) or torch.allclose(
            out, original.flip(-1), atol=1e-5
        )
    assert not torch.allclose(flipped, images, atol=1e-3)  # 6 coins all heads: p = 1/64


def test_crops_stay_inside_the_image_and_are_reproducible():
    images = torch.arange(16.0).view(1, 1, 4, 4).expand(20, 3, 4, 4).contiguous()
    a = random_crop_flip(images, 0.3, True, torch.Generator().manual_seed(3))
    b = random_crop_flip(images, 0.3, True, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert a.min() >= 0 and a.max() <= 15  # bilinear inside the image: no padding values


def test_precise_bn_statistics_are_the_data_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    x = torch.randn(40, 3, 5, 5) * 3 + 1
    recompute_bn_statistics(model, x, batch_size=40, max_batches=1)
    with torch.no_grad():
        features = model[0](x)
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, features.mean((0, 2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        bn.running_var, features.var((0, 2, 3), unbiased=True), atol=1e-4, rtol=1e-4
    )
    assert bn.momentum == 0.1  # restored


def _splits(classes: int = 3, per_class: int = 40) -> LabelledSplits:
    generator = torch.Generator().manual_seed(1)
    centres = torch.randn(classes, 3, 1, 1, generator=generator) * 2

    def draw(count: int):
        y = torch.arange(count) % classes
        x = centres[y] + 0.5 * torch.randn(count, 3, 6, 6, generator=generator)
        return x, y

    return LabelledSplits(*draw(classes * per_class), *draw(classes * 10))


def _backbone() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())  # fmt: skip


def test_finetune_learns_and_equal_backbones_give_equal_curves():
    splits = _splits()
    cfg = FinetuneConfig(epochs=6, batch_size=16, base_lr=2.0, flip=False)
    torch.manual_seed(0)
    backbone = _backbone()
    first = finetune(backbone, 8, splits, cfg, device=torch.device("cpu"), run="a")
    second = finetune(backbone, 8, splits, cfg, device=torch.device("cpu"), run="b")
    assert [r["epoch"] for r in first] == [1, 2, 3, 4, 5, 6]
    assert first[-1]["val_acc"] >= 90.0  # 3 well-separated classes; chance is 33%
    assert first[-1]["train_loss"] < first[0]["train_loss"]
    # Same data order, crops and head init: only the backbone may make the runs differ.
    for a, b in zip(first, second, strict=True):
        assert a["val_loss"] == b["val_loss"] and a["train_acc"] == b["train_acc"]
    assert all(p.grad is None for p in backbone.parameters())  # the caller's copy is untouched


def test_unlabelled_or_bad_settings_are_refused():
    splits = _splits()
    unlabelled = LabelledSplits(splits.train_x, -torch.ones_like(splits.train_y), splits.val_x,
                                splits.val_y)  # fmt: skip
    with pytest.raises(UsageError, match="fine-tuning needs class labels"):
        unlabelled.check("some/folder")
    with pytest.raises(UsageError, match="--epochs 0"):
        FinetuneConfig(epochs=0)
    with pytest.raises(UsageError, match="--min-crop-scale 1.5"):
        FinetuneConfig(min_crop_scale=1.5)


def _fastclr(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastclr.cli.main", *args],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )  # fmt: skip


def test_cli_finetune_vs_scratch_writes_curves_and_table(tmp_path):
    run = tmp_path / "run"
    trained = _fastclr("train", "--data", "synthetic:64", "--image-size", "16", "--batch-size",
                       "16", "--epochs", "1", "--max-steps", "2", "--knn-every", "0", "--loader",
                       "torch", "--out", str(run), cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    checkpoint = sorted(run.glob("checkpoint-*.pt"))[-1]
    result = _fastclr("eval", "finetune", "--checkpoint", str(checkpoint), "--epochs", "2",
                      "--batch-size", "16", "--max-images", "48", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run / "finetune" / "finetune.jsonl").open()]
    assert {(r["run"], r["epoch"]) for r in records} == {
        (run_name, epoch) for run_name in ("pretrained", "scratch") for epoch in (1, 2)
    }
    png = (run / "finetune" / "finetune.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "pretrained" in result.stdout and "scratch" in result.stdout
    refused = _fastclr("eval", "finetune", "--checkpoint", str(checkpoint), "--epochs", "0",
                       cwd=tmp_path)  # fmt: skip
    assert refused.returncode == 2 and "--epochs must be at least 1, got 0" in refused.stderr
    assert "recommended: 10" in refused.stderr
    assert "Traceback" not in refused.stderr
