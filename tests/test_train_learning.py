"""SimCLR learns on real images: a short run on scikit-learn's digits lifts the kNN top-1 of the
backbone above that of the same encoder at random init.

The run is the CPU demo preset (8 px, crops >= 25% area, LARS base lr 4.0, temperature 0.2,
batch 64) for 4 epochs (88 steps). Measured here: 78.61% -> 84.17% kNN top-1 (k=200, T=0.1) on
the 360 held-out digits, +5.6 points; loss 4.92 -> 3.93 (chance: ln 127 = 4.84).
"""

import json

import pytest

from fastclr.train.config import TrainConfig
from fastclr.train.loop import train

MARGIN = 4.0  # kNN top-1 points over the random-init encoder (measured +5.6)


@pytest.mark.slow
def test_short_run_on_digits_beats_random_init(tmp_path):
    cfg = TrainConfig(
        data="digits", epochs=4, batch_size=64, device="cpu", precision="fp32",
        knn_every=4, checkpoint_every=0, log_every=11, out=str(tmp_path), seed=0,
    )  # fmt: skip
    summary = train(cfg)
    print(json.dumps(summary))
    assert summary["knn_final"] >= summary["knn_init"] + MARGIN, summary
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "step"]
    assert losses[-1] < losses[0] - 0.5  # the contrastive loss itself fell
