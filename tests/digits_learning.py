"""The digits run behind the learning tests of MoCo v2, SwAV and BYOL (tests/test_moco_learning.py,
tests/test_swav_learning.py, tests/test_byol_learning.py): train with the method's digits preset,
then read back what they assert.
"""

import json
import math
from pathlib import Path

from fastclr.train.config import TrainConfig
from fastclr.train.loop import train

EPOCHS, BATCH = 30, 64


def train_on_digits(method: str, out: Path, epochs: int = EPOCHS) -> tuple[dict, dict, float]:
    """(train's summary, the resolved config.json, the last epoch's mean loss) of `method` on the
    digits, seed 0, `epochs` epochs at batch BATCH, fp32 on the CPU; every step's loss is checked
    finite and every epoch complete."""
    cfg = TrainConfig(
        method=method, data="digits", epochs=epochs, batch_size=BATCH, device="cpu",
        precision="fp32", knn_every=epochs, checkpoint_every=0, log_every=1, out=str(out), seed=0,
    )  # fmt: skip
    summary = train(cfg)
    print(json.dumps(summary))
    resolved = json.loads((out / "config.json").read_text())
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "step"]
    steps_per_epoch = len(losses) // epochs
    assert len(losses) == epochs * steps_per_epoch and all(map(math.isfinite, losses))
    return summary, resolved, sum(losses[-steps_per_epoch:]) / steps_per_epoch
