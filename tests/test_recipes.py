"""The paper recipes of fastclr/configs: each resolves to its paper's settings, and each trains two
steps on synthetic data at 8 px (`--config NAME` with the data, size, arch and batch overridden)."""

import argparse

import pytest

from fastclr.cli.main import main
from fastclr.errors import UsageError
from fastclr.train.config import add_train_arguments, config_from_args, recipe_names, resolve_config
from tests.test_methods_train import NEEDS_SWAV_OPS, NEEDS_VIEWS
from tests.test_train_loop import TINY, step_losses

PAPER = {
    "simclr-cifar10": {"method": "simclr", "arch": "resnet18", "batch_size": 512, "epochs": 800},
    "simclr-imagenet": {"method": "simclr", "arch": "resnet50", "batch_size": 4096,
                        "temperature": 0.1, "epochs": 100, "optimizer": "lars", "lr": 0.3},
    "moco-v2-digits": {"method": "moco", "data": "digits", "epochs": 30, "optimizer": "lars",
                       "lr": 2.0, "queue_size": 1024, "target_momentum": 0.99},
    "moco-v2-imagenet": {"method": "moco", "queue_size": 65536, "temperature": 0.2,
                         "target_momentum": 0.999, "optimizer": "sgd", "lr": 0.03},
    "byol-digits": {"method": "byol", "data": "digits", "epochs": 30, "lr": 4.0,
                    "target_momentum": 0.99, "pred_lr_scale": 10.0, "flip_p": 0.0},
    "byol-imagenet": {"method": "byol", "batch_size": 4096, "target_momentum": 0.996,
                      "proj_hidden": 4096, "proj_dim": 256, "pred_hidden": 4096, "lr": 0.2,
                      "view_blur_p": (1.0, 0.1), "view_solarize_p": (0.0, 0.2)},
    "simsiam-digits": {"method": "simsiam", "data": "digits", "epochs": 30, "optimizer": "sgd",
                       "lr": 0.1, "weight_decay": 5e-4, "pred_lr_scale": 10.0, "flip_p": 0.0},
    "simsiam-imagenet": {"method": "simsiam", "optimizer": "sgd", "lr": 0.05,
                         "weight_decay": 1e-4, "proj_layers": 3, "pred_hidden": 512},
    "swav-digits": {"method": "swav", "data": "digits", "epochs": 50, "optimizer": "lars",
                    "lr": 2.0, "temperature": 0.2, "prototypes": 30, "local_views": 0},
    "swav-imagenet": {"method": "swav", "prototypes": 3000, "sinkhorn_epsilon": 0.05,
                      "sinkhorn_iterations": 3, "temperature": 0.1, "local_views": 6,
                      "freeze_prototypes_steps": 313},
}  # fmt: skip
# What makes a recipe fit 24 synthetic images at 8 px in a few seconds.
SMALL = {
    "moco-v2-digits": ["--queue-size", "16"],
    "moco-v2-imagenet": ["--queue-size", "16"],
    "swav-digits": ["--prototypes", "6"],
    "swav-imagenet": ["--local-size", "8", "--prototypes", "16", "--queue-size", "8"],
}


def resolved(name: str):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return resolve_config(config_from_args(parser.parse_args(["--config", name])))[0]


def test_every_recipe_is_listed_and_has_its_paper_settings():
    assert recipe_names() == sorted(PAPER)
    for name, expected in PAPER.items():
        cfg = resolved(name)
        for key, value in expected.items():
            assert getattr(cfg, key) == value, (name, key)


def test_unknown_recipe_names_the_recipes():
    with pytest.raises(UsageError, match="no recipe of that name; .* simclr-imagenet"):
        resolved("simclr-imagenat")


@pytest.mark.parametrize(
    "name",
    [
        *(n for n in sorted(PAPER) if n != "swav-imagenet"),
        pytest.param("swav-imagenet", marks=[NEEDS_SWAV_OPS, NEEDS_VIEWS]),
    ],
)
def test_recipe_trains_two_steps(name, tmp_path):
    args = ["--config", name, *TINY, "--arch", "resnet18", *SMALL.get(name, [])]
    args += ["--max-steps", "2", "--knn-every", "0", "--out", str(tmp_path)]
    assert main(["train", *args]) == 0
    assert len(step_losses(tmp_path)) == 2
