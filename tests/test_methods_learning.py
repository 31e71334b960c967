"""BYOL and SimSiam learn on real images: two epochs on scikit-learn's digits take each method's
loss well down from its first epoch, and the projections do not collapse.

Runs: the digits at 8 px, batch 64 (22 steps per epoch), the torchvision loader, the papers'
settings except heads narrowed to the ResNet-18's 512 features and, for SimSiam, a higher lr.

What is asserted, and why: the mean loss of the last epoch is below the first epoch's mean by
MARGIN (about half the drop measured), and the per-dimension standard deviation of the
l2-normalized projections, times sqrt(d), stays above 0.5: SimSiam's own collapse monitor (1 for
spread-out unit vectors, 0 when collapsed), since a collapsed network also lowers these losses.
kNN top-1 is printed, not asserted: at a few epochs it is not robust (tests/test_train_learning.py).

Measured (seed 0, one AVX-512 machine, default kernels; first -> last epoch mean, spread, kNN
init -> final): BYOL 3.554 -> 2.583, 0.82, 78.6 -> 81.4; SimSiam -0.021 -> -0.141, 0.98,
78.6 -> 78.9. Under ATEN_CPU_CAPABILITY=avx2 both pass too (same machine). Not yet measured:
other seeds.

MoCo v2 and SwAV are not here: in the same two epochs their losses stay near their chance values
(MoCo, queue 256, SGD lr 0.5, momentum 0.99: 5.322 -> 5.544, chance ln(257) = 5.549, and still
5.52 mid-run with LARS lr 4.0; SwAV, 30 prototypes, LARS lr 1.0: 3.618 -> 3.488, ln(30) = 3.401),
although kNN rose (MoCo 78.6 -> 83.9, SwAV 78.6 -> 81.4): one seed, so no margin on it is known to
hold; a longer run is needed to show them learning by a criterion that holds.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from fastclr.data import build_train_loader
from fastclr.eval.backbone import load_trained_model
from fastclr.train.config import TrainConfig
from fastclr.train.loop import train

EPOCHS, BATCH = 2, 64
SETTINGS = {
    "byol": {"proj_hidden": 512, "pred_hidden": 512, "proj_dim": 128},
    "simsiam": {"proj_hidden": 512, "pred_hidden": 128, "proj_dim": 512, "lr": 0.5},
}
MARGIN = {"byol": 0.45, "simsiam": 0.05}  # measured drops: 0.97, 0.12


def projection_std(model) -> float:
    """Mean per-dimension std of l2-normalized projections of one batch of digits, x sqrt(d)
    (1 for spread-out unit vectors, 0 when collapsed)."""
    loader = build_train_loader("digits", batch_size=256, image_size=8, loader="torch", seed=9,
                                num_workers=0)  # fmt: skip
    view, _, _ = next(iter(loader))
    with torch.no_grad():
        z = F.normalize(model.projector(model.backbone(view)), dim=1)
    return (z.std(0).mean() * math.sqrt(z.shape[1])).item()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_short_run_on_digits_learns(method, tmp_path):
    cfg = TrainConfig(
        method=method, data="digits", epochs=EPOCHS, batch_size=BATCH, device="cpu",
        precision="fp32", loader="torch", knn_every=EPOCHS, checkpoint_every=0, log_every=1,
        out=str(tmp_path), seed=0, **SETTINGS[method],
    )  # fmt: skip
    summary = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "step"]
    per_epoch = len(losses) // EPOCHS
    first = sum(losses[:per_epoch]) / per_epoch
    last = sum(losses[-per_epoch:]) / per_epoch
    spread = projection_std(load_trained_model(tmp_path)[0])
    print(json.dumps({"method": method, "first": first, "last": last, "spread": spread,
                      "knn": [summary["knn_init"], summary["knn_final"]]}))  # fmt: skip
    assert all(map(math.isfinite, losses))
    assert last < first - MARGIN[method], (first, last)
    assert spread > 0.5, spread
