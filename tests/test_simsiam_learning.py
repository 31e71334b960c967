"""SimSiam learns on real images: 20 epochs on scikit-learn's digits lift the backbone's kNN top-1
well above the random-init encoder's, and take the negative cosine far below zero.

The run is `--method simsiam --data digits` with the digits preset (fastclr/train/config.py
DIGITS_METHOD_PRESET; the recipe fastclr/configs/simsiam-digits.yaml runs 30 epochs): 8 px, crops
>= 80% of the area, no flips, SGD base lr 0.1 with weight decay 5e-4, no warmup, projector
3 x 512 ending in BN, predictor 512 -> 128 -> 512 held at 10x the peak lr, batch 64 (22 steps per
epoch). The loss is -cos(prediction, the other view's projection) averaged over both directions: 0
for unrelated vectors (where the runs start), -1 at the floor.

Measured on one AVX-512 machine (torch 2.14.1, DALI on the CPU): kNN top-1 (%, the trainer's
monitor: k=200, train split as bank, the 360 val images as queries) of the random-init encoder ->
after training, per seed (30 epochs: one thread, the recipe's run):

    seed  30 epochs                  30 epochs, avx2
    0     78.61 -> 92.78 (+14.17)
    1     85.56 -> 92.50 ( +6.94)    85.56 -> 92.50 (+6.94)
    2     80.56 -> 93.61 (+13.05)
    3     80.00 -> 93.89 (+13.89)
    4     81.11 -> 93.06 (+11.95)

This test, seed 0 at 20 epochs with pytest's threads: 78.61 -> 92.22 (+13.61), last epoch's mean
loss -0.83; the same under ATEN_CPU_CAPABILITY=avx2.

What is asserted, and why: kNN after training at least KNN_MARGIN points above the same seed's
random-init encoder (about a quarter of seed 0's gain), and the last epoch's mean loss under
LOSS_CEILING. With the predictor at 1x the peak (the paper's fix_pred_lr) the loss reaches -0.95
yet kNN stays at or below the random init's over 60 epochs; flipped views lower it further. The
measurements: bench/results/methods/cpu-amd-epyc/learning-digits-20261129.md, section 7.
"""

import pytest

from tests.digits_learning import train_on_digits

EPOCHS = 20
KNN_MARGIN = 3.5  # points over the same seed's random-init encoder (seed 0 gained 13.6)
LOSS_CEILING = -0.5  # last epoch's mean loss (seed 0: -0.83; the runs start near 0)


@pytest.mark.slow
def test_twenty_epochs_of_simsiam_on_digits_lift_knn_over_the_random_init_encoder(tmp_path):
    summary, resolved, last_epoch = train_on_digits("simsiam", tmp_path, epochs=EPOCHS)
    assert (resolved["pred_lr_scale"], resolved["flip_p"]) == (10.0, 0.0)  # the preset ran
    assert last_epoch < LOSS_CEILING, (last_epoch, summary)
    assert summary["knn_final"] >= summary["knn_init"] + KNN_MARGIN, summary
