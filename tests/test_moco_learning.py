"""MoCo v2 learns on real images: 30 epochs on scikit-learn's digits lift the backbone's kNN top-1
well above the random-init encoder's, and take InfoNCE far below its chance value.

The run is `--method moco --data digits` with the digits preset (fastclr/train/config.py
DIGITS_METHOD_PRESET; the recipe fastclr/configs/moco-v2-digits.yaml): 8 px, crops >= 50% of the
area, LARS base lr 2.0, weight decay 1e-6, no warmup, tau 0.2, a 1,024-key queue, key momentum
0.99, batch 64 (22 steps per epoch, 660 in all), the default loader. With embeddings that tell no
image from another the loss is ln(1 + K) = ln 1025 = 6.93 ("chance").

Measured on one AVX-512 machine (torch 2.14.1, DALI on the CPU, OMP_NUM_THREADS=1, two runs at a
time, about 5 minutes each): kNN top-1 (%, the trainer's monitor: k=200, train split as bank, the
360 val images as queries) of the random-init encoder -> after 30 epochs, and the last epoch's
mean loss, per seed:

    seed  default kernels (AVX-512)          ATEN_CPU_CAPABILITY=avx2
    0     78.61 -> 94.44 (+15.83)  4.234     78.61 -> 93.61 (+15.00)  4.194
    1     85.56 -> 93.33 ( +7.78)  4.392     85.56 -> 94.72 ( +9.17)  4.371
    2     80.56 -> 92.22 (+11.67)  4.204     (not run)
    3     80.00 -> 94.17 (+14.17)  4.213     (not run)
    4     81.11 -> 95.56 (+14.44)  4.122     (not run)

What is asserted, and why: kNN after training at least KNN_MARGIN points above the same seed's
random-init encoder (under half the smallest gain above, +7.78; the side-by-side with lightly,
at two threads and the torch loader's views, gave seed 0 +16.94 and seed 1 +4.44: runs of one
seed move by several points with threads and views), and the last epoch's mean
loss LOSS_MARGIN below chance (smallest drop measured: 2.54). Shorter runs and the papers' settings
do not give a margin that holds: 8 epochs (at LARS 4.0) gave +4.5, -5.0, +0.3, -0.8, +3.1 (seeds
0-4), SGD 0.03 with momentum 0.999 keeps the loss at chance, and kNN first falls below the random
init (epoch 5) before it rises past it (by epoch 10). LARS 4.0 for 30 epochs gave +6.9 to +13.3
on the five seeds but +1.1 on seed 1 under AVX2, hence the preset's 2.0. The measurements:
bench/results/methods/cpu-amd-epyc/learning-digits-20261129.md.
"""

import math

import pytest

from tests.digits_learning import train_on_digits

QUEUE = 1024
KNN_MARGIN = 3.5  # points over the same seed's random-init encoder (smallest gain measured: 7.78)
LOSS_MARGIN = 1.5  # nats below chance, last epoch's mean loss (smallest drop measured: 2.54)


@pytest.mark.slow
def test_thirty_epochs_of_moco_on_digits_lift_knn_over_the_random_init_encoder(tmp_path):
    summary, resolved, last_epoch = train_on_digits("moco", tmp_path)
    assert (resolved["queue_size"], resolved["optimizer"]) == (QUEUE, "lars")  # the preset ran
    chance = math.log(1 + QUEUE)
    assert last_epoch < chance - LOSS_MARGIN, (last_epoch, chance, summary)
    assert summary["knn_final"] >= summary["knn_init"] + KNN_MARGIN, summary
