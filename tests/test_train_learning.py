"""SimCLR learns on real images: 4 epochs on scikit-learn's digits take the contrastive loss well
below its chance value.

The run is the CPU demo preset (8 px, crops >= 25% area, LARS base lr 4.0, temperature 0.2,
batch 64, 88 steps) with the default loader: DALI on the CPU when installed (the README's install
and CI), else torchvision (about 3x the CPU time here). An encoder whose embeddings tell no image
from another has NT-Xent loss ln(2B - 1) = ln 127 = 4.844 ("chance"). With 2 OpenMP threads and
DALI this machine follows the issue-11 trajectory: kNN 78.61 -> 80.00, and the test passes.

What is asserted, and why: the mean loss over the last epoch is below chance by LOSS_MARGIN. The kNN
top-1 of the backbone is reported, not asserted: after 4 epochs it moves by -2.8 to +7.5 points over
the random-init encoder across seeds, loaders and kernels (8 of 29 runs end below it; the
issue-11 machine measured +1.4 with DALI), so no margin on it holds everywhere; the loss,
averaged over the 22 steps of 128 views of an epoch, is steady.

Measured on one AVX-512 machine (torch 2.14.1, OMP_NUM_THREADS=1): the last epoch's mean loss, its
drop below chance (4.844), and the kNN top-1 (%) before -> after, per loader, seed and kernel set:

    loader  seed  default kernels (AVX-512)        ATEN avx2 + oneDNN AVX2 [1]
                  loss (drop)    kNN init -> final loss (drop)    kNN init -> final
    torch      0  4.241 (0.603)  78.61 -> 83.89   4.239 (0.605)  78.61 -> 82.50
    torch      1  4.259 (0.586)  85.56 -> 85.28   4.231 (0.614)  85.56 -> 84.17
    torch      2  4.219 (0.625)  80.56 -> 85.00   (not run)
    torch      3  4.232 (0.612)  80.00 -> 84.72   4.272 (0.573)  80.00 -> 84.17
    torch      4  4.114 (0.730)  81.11 -> 87.50   4.209 (0.635)  81.11 -> 86.39
    torch      5  4.240 (0.604)  83.61 -> 80.83   4.242 (0.602)  83.61 -> 84.44
    torch      6  4.287 (0.557)  84.72 -> 83.89   (not run)
    DALI       0  4.210 (0.634)  78.61 -> 85.28   4.214 (0.630)  78.61 -> 85.00
    DALI       1  4.214 (0.630)  85.56 -> 86.67   4.258 (0.586)  85.56 -> 83.89
    DALI       2  4.256 (0.588)  80.56 -> 86.39   4.203 (0.641)  80.56 -> 85.00
    DALI       3  4.151 (0.693)  80.00 -> 87.50   4.164 (0.680)  80.00 -> 84.72
    DALI       4  4.177 (0.667)  81.11 -> 81.94   (not run)

[1] ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN's AVX2 convolutions: another
    trajectory). ATEN_CPU_CAPABILITY=avx2 alone gave bitwise the same runs as the default here
    (torch seeds 0-6, DALI seed 0). Over all 29 runs: drop 0.557 to 0.730; kNN change -2.78 to
    +7.50 (8 runs end below the random-init encoder).
LOSS_MARGIN is about half the smallest drop measured.
"""

import json
import math

import pytest

from fastclr.train.config import TrainConfig
from fastclr.train.loop import train

EPOCHS, BATCH = 4, 64
LOSS_MARGIN = 0.3  # nats below chance, last epoch's mean loss (smallest drop measured: 0.557)


@pytest.mark.slow
def test_short_run_on_digits_takes_loss_below_chance(tmp_path):
    cfg = TrainConfig(
        data="digits", epochs=EPOCHS, batch_size=BATCH, device="cpu", precision="fp32",
        knn_every=EPOCHS, checkpoint_every=0, log_every=1, out=str(tmp_path),
        seed=0,
    )  # fmt: skip
    summary = train(cfg)
    print(json.dumps(summary))
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "step"]
    steps_per_epoch = len(losses) // EPOCHS
    assert len(losses) == EPOCHS * steps_per_epoch and all(map(math.isfinite, losses))
    chance = math.log(2 * BATCH - 1)
    first_epoch = sum(losses[:steps_per_epoch]) / steps_per_epoch
    last_epoch = sum(losses[-steps_per_epoch:]) / steps_per_epoch
    assert abs(first_epoch - chance) < 0.2, (first_epoch, chance)  # starts at chance
    assert last_epoch < chance - LOSS_MARGIN, (last_epoch, chance, summary)
    assert 10.0 < summary["knn_final"] <= 100.0  # the monitor ran; 10% is chance for 10 classes
