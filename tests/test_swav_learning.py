"""SwAV learns on real images: 30 epochs on scikit-learn's digits lift the backbone's kNN top-1 well
above the random-init encoder's, and take the swapped-prediction loss far below its chance value.

The run is `--method swav --data digits` with the digits preset (fastclr/train/config.py
DIGITS_METHOD_PRESET): 8 px, two global crops >= 50% of the area, LARS base lr 2.0, weight decay
1e-6, 10 warmup epochs, 30 prototypes (frozen for the first epoch), tau 0.2, Sinkhorn epsilon 0.05
with 3 iterations, no queue, batch 64 (22 steps per epoch). With scores that tell no prototype from
another the loss is ln 30 = 3.40 ("chance").

Measured on one AVX-512 machine (torch 2.14.1, DALI on the CPU, OMP_NUM_THREADS=1, two runs at a
time): kNN top-1 (%, the trainer's monitor: k=200, train split as bank, the 360 val images as
queries) of the random-init encoder -> after training, per seed:

    seed  30 epochs         30 epochs, avx2   50 epochs (the recipe)   50 epochs, avx2
    0     78.61 -> 91.11    78.61 -> 90.28    78.61 -> 91.67
    1     85.56 -> 88.06    85.56 -> 85.00    85.56 -> 91.11           85.56 -> 90.00
    2     80.56 -> 91.11    (not run)         80.56 -> 95.00
    3     80.00 -> 84.72    (not run)         80.00 -> 91.67
    4     81.11 -> 88.06    (not run)         81.11 -> 92.22

(30 epochs, seeds 1-4: the same flags by hand, before the preset.) Thirty epochs fall short on
seed 1, whose random init is the strongest (+2.5, and -0.6 under avx2); fifty clear every seed,
hence the recipe fastclr/configs/swav-digits.yaml. This test runs seed 0 at thirty epochs to keep
CI's time (about 5 minutes on one core).

What is asserted, and why: kNN after training at least KNN_MARGIN points above the same seed's
random-init encoder (under a third of seed 0's gains, +12.5 and +11.7 under avx2), and the last
epoch's mean loss LOSS_MARGIN below chance (seed 0: 1.41 and 1.42 at epoch 30, 2.0 below).
The measurements: bench/results/methods/cpu-amd-epyc/learning-digits-20261129.md.
"""

import math

import pytest

from tests.digits_learning import train_on_digits

PROTOTYPES = 30
KNN_MARGIN = 3.5  # points over the same seed's random-init encoder (seed 0 gained 12.5)
LOSS_MARGIN = 1.0  # nats below chance ln 30, last epoch's mean loss (seed 0 dropped 2.0)


@pytest.mark.slow
def test_thirty_epochs_of_swav_on_digits_lift_knn_over_the_random_init_encoder(tmp_path):
    summary, resolved, last_epoch = train_on_digits("swav", tmp_path)
    assert (resolved["prototypes"], resolved["temperature"]) == (PROTOTYPES, 0.2)  # the preset ran
    chance = math.log(PROTOTYPES)
    assert last_epoch < chance - LOSS_MARGIN, (last_epoch, chance, summary)
    assert summary["knn_final"] >= summary["knn_init"] + KNN_MARGIN, summary
