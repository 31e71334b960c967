"""Settings: defaults < --config file < flags, each value checked where it came from, and the
defaults that depend on the data, the optimizer and a restart, resolved in one place."""

import json

import numpy as np
import pytest
from PIL import Image

from fastclr import checkpoint
from fastclr.cli.main import build_parser
from fastclr.data.augment_config import LARGE_IMAGE_MIN_SIZE
from fastclr.data.sources import default_image_size_choice
from fastclr.errors import UsageError
from fastclr.methods.defaults import METHOD_FIELDS
from fastclr.train.config import FIELDS, TrainConfig, config_from_args, resolve_config


def from_command_line(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_file_settings_survive_unset_flags_and_flags_override_them(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("nproc: 2\ngpus: 0\nepochs: 7\nlr: 1e-3\nbatch-size: 32\n")
    cfg = from_command_line("--config", str(path))
    assert (cfg.nproc, cfg.epochs, cfg.batch_size) == (2, 7, 32)
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float)  # YAML 1.1 alone reads '1e-3' as text
    cfg = from_command_line("--config", str(path), "--nproc", "0", "--epochs", "3")
    assert (cfg.nproc, cfg.epochs, cfg.batch_size) == (0, 3, 32)
    assert from_command_line().nproc == 0  # the dataclass default


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("epochs: one", "epochs: in"),
        ('batch_size: "32"', "batch_size: in"),
        ("epochs: 1.5", "epochs: in"),
        ('channels_last: "no"', "channels_last: in"),
        ("compile: 1", "compile: in"),
        ("batch_size: 1", "batch_size: in"),
        ("temperature: .nan", "temperature: in"),
        ("optimizer: adam", "optimizer: in"),
        ("epoch: 3", "unknown config keys ['epoch']"),
        ("epochs: [1", "not valid YAML at line"),
        ("- 1\n- 2", "expected a mapping"),
    ],
)
def test_bad_file_values_name_the_key_and_the_file(tmp_path, text, named):
    path = tmp_path / "run.yaml"
    path.write_text(text + "\n")
    with pytest.raises(UsageError, match="run.yaml|unknown config keys") as error:
        from_command_line("--config", str(path))
    assert named in str(error.value)


def resolved(*argv: str) -> TrainConfig:
    return resolve_config(from_command_line("--data", "synthetic:24", *argv), restart_count=0)[0]


def test_byol_defaults_to_its_papers_asymmetric_views_and_flags_win():
    big = resolved("--method", "byol", "--image-size", str(LARGE_IMAGE_MIN_SIZE))
    assert (big.view_blur_p, big.view_solarize_p) == ((1.0, 0.1), (0.0, 0.2))
    small = resolved("--method", "byol", "--image-size", str(LARGE_IMAGE_MIN_SIZE - 1))
    assert (small.view_blur_p, small.view_solarize_p) == ((0.0, 0.0), (0.0, 0.2))  # no blur
    for method in ("simclr", "moco", "simsiam"):
        cfg = resolved("--method", method, "--image-size", "224")
        assert (cfg.view_blur_p, cfg.view_solarize_p) == (None, None), method
    given = ["--view-blur-p", "0.3,0.7", "--view-solarize-p", " 0, 1"]
    for method in ("byol", "simclr"):  # every method takes them; given values win at any size
        cfg = resolved("--method", method, "--image-size", "8", *given)
        assert (cfg.view_blur_p, cfg.view_solarize_p) == ((0.3, 0.7), (0.0, 1.0)), method
    three = resolved("--views", "3", "--view-blur-p", "1,0,0.5")
    assert three.view_blur_p == (1.0, 0.0, 0.5)
    assert {"view_blur_p", "view_solarize_p"}.isdisjoint(METHOD_FIELDS)
    for name in ("view_blur_p", "view_solarize_p"):
        assert "byol " in FIELDS[name].metadata["help"]
    assert f"below {LARGE_IMAGE_MIN_SIZE} px" in FIELDS["view_blur_p"].metadata["help"]


def test_per_view_settings_round_trip_through_files(tmp_path):
    """A YAML list, and the resolved config.json (JSON has lists, not tuples), read back as the
    same tuples: --config of a run's config.json resolves to that run's config."""
    path = tmp_path / "run.yaml"
    path.write_text("method: byol\nview_blur_p: [1, 0.1]\nview_solarize_p: '0.0,0.2'\n")
    cfg = resolve_config(from_command_line("--config", str(path)), restart_count=0)[0]
    assert (cfg.view_blur_p, cfg.view_solarize_p) == ((1.0, 0.1), (0.0, 0.2))
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(cfg.to_dict()))
    assert resolve_config(from_command_line("--config", str(saved)), restart_count=0)[0] == cfg


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--view-blur-p", "1.0,0.1,0.5"], "--view-blur-p 1,0.1,0.5: 3 value(s) for --views 2"),
        (["--views", "3", "--view-solarize-p", "0,0.2"], "--view-solarize-p 0,0.2: 2 value(s)"),
        (["--view-solarize-p", "0.0,1.5"], "--view-solarize-p 0.0,1.5: each value must be in"),
        (["--view-blur-p", "nan,0"], "--view-blur-p nan,0: each value must be in [0, 1]"),
        (["--view-blur-p", "1.0,"], "--view-blur-p 1.0,: must be comma-separated numbers"),
        (["--view-blur-p", ""], "--view-blur-p : must be comma-separated numbers"),
    ],
)
def test_bad_per_view_flags_name_the_flag(argv, named):
    with pytest.raises(UsageError) as error:
        resolved(*argv)
    assert named in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "text", ["view_blur_p: [1.0, true]", "view_blur_p: 0.5", "view_blur_p: []"]
)
def test_bad_per_view_file_values_name_the_key(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text + "\n")
    with pytest.raises(UsageError, match="view_blur_p: in .*run.yaml, .*comma-separated numbers"):
        from_command_line("--config", str(path))


def test_missing_and_malformed_json_config(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        from_command_line("--config", str(tmp_path / "absent.yaml"))
    (tmp_path / "run.json").write_text('{"epochs": 3,}')
    with pytest.raises(UsageError, match="not valid JSON at line 1"):
        from_command_line("--config", str(tmp_path / "run.json"))


def test_python_api_checks_values_too():
    with pytest.raises(UsageError, match="epochs=0: must be >= 1"):
        TrainConfig(epochs=0)
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)


def test_resolve_fills_data_and_optimizer_defaults_once():
    cfg, notes = resolve_config(TrainConfig(data="synthetic:24", optimizer="sgd"), restart_count=0)
    assert (cfg.image_size, cfg.stem, cfg.lr, cfg.weight_decay) == (32, "cifar", 0.06, 5e-4)
    assert notes == []
    digits, _ = resolve_config(TrainConfig(), restart_count=0)
    assert (digits.image_size, digits.crop_scale, digits.lr) == (8, 0.5, 4.0)
    assert resolve_config(digits, restart_count=0) == (digits, [])  # idempotent


def test_moco_on_digits_gets_the_digits_preset_and_its_paper_settings_elsewhere():
    def moco(data: str, *flags: str) -> TrainConfig:
        return resolve_config(from_command_line("--method", "moco", "--data", data, *flags))[0]

    def settings(c: TrainConfig) -> tuple:
        return (c.optimizer, c.lr, c.weight_decay, c.queue_size, c.target_momentum)

    assert settings(moco("digits")) == ("lars", 2.0, 1e-6, 1024, 0.99)
    assert settings(moco("synthetic:24")) == ("sgd", 0.03, 1e-4, 65536, 0.999)  # the paper's
    given = moco("digits", "--optimizer", "sgd", "--queue-size", "512", "--target-momentum", "0.9")
    assert settings(given) == ("sgd", 0.03, 1e-4, 512, 0.9)  # flags win, lr follows the optimizer
    assert moco("digits", "--config", "moco-v2-digits").epochs == 30


def test_byol_and_simsiam_on_digits_hold_the_predictor_fast_and_never_flip():
    def resolved(method: str, data: str, *flags: str) -> TrainConfig:
        return resolve_config(from_command_line("--method", method, "--data", data, *flags))[0]

    def settings(c: TrainConfig) -> tuple:
        return (c.optimizer, c.lr, c.weight_decay, c.pred_lr_scale, c.flip_p)

    assert settings(resolved("byol", "digits")) == ("lars", 4.0, 1.5e-6, 10.0, 0.0)
    assert settings(resolved("simsiam", "digits")) == ("sgd", 0.1, 5e-4, 10.0, 0.0)
    assert resolved("simsiam", "digits").crop_scale == 0.8
    # The papers' elsewhere: BYOL's predictor on the schedule, SimSiam's at the peak; flips.
    assert settings(resolved("byol", "synthetic:24")) == ("lars", 0.2, 1.5e-6, 0.0, None)
    assert settings(resolved("simsiam", "synthetic:24")) == ("sgd", 0.05, 1e-4, 1.0, None)
    given = resolved("byol", "digits", "--flip-p", "0.5", "--pred-lr-scale", "2", "--lr", "1")
    assert settings(given) == ("lars", 1.0, 1.5e-6, 2.0, 0.5)  # flags win
    assert resolved("byol", "digits", "--pred-lr-scale", "0").pred_lr_scale == 0.0  # the paper's
    assert settings(resolved("simsiam", "digits", "--optimizer", "lars"))[1:3] == (0.3, 1e-6)
    with pytest.raises(UsageError, match="--method simclr does not use it"):
        resolved("simclr", "digits", "--pred-lr-scale", "10")  # a flag simclr would ignore
    with pytest.raises(UsageError, match="flip_p=1.5: must be in"):
        TrainConfig(flip_p=1.5)


def test_flip_p_reaches_the_views():
    from fastclr.train.run import augment_config

    assert augment_config(TrainConfig(data="synthetic:24", image_size=8)).flip_p == 0.5
    assert augment_config(TrainConfig(data="synthetic:24", image_size=8, flip_p=0.0)).flip_p == 0.0


def test_restarted_group_resumes_from_newest_checkpoint_in_out(tmp_path):
    given = TrainConfig(data="synthetic:24", out=str(tmp_path), resume=str(tmp_path / "old.pt"))
    # No checkpoint in --out yet: the restarted group starts where the first attempt started.
    assert resolve_config(given, restart_count=1)[0].resume == given.resume
    checkpoint.save_checkpoint({"step": 4}, tmp_path, 4)
    assert resolve_config(given, restart_count=0)[0].resume == given.resume
    cfg, notes = resolve_config(given, restart_count=1)
    assert cfg.resume == "auto" and "newest checkpoint" in notes[0]
    none = TrainConfig(data="synthetic:24", out=str(tmp_path), resume="none")
    assert resolve_config(none, restart_count=2)[0].resume == "auto"


def write_images(folder, sides):
    folder.mkdir(parents=True)
    rng = np.random.default_rng()
    for i, (w, h) in enumerate(sides):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")


def test_folder_image_size_comes_from_the_images(tmp_path):
    write_images(tmp_path / "small" / "a", [(25, 30)] * 3)
    write_images(tmp_path / "small" / "b", [(25, 25), (40, 20)])
    size, note = default_image_size_choice(str(tmp_path / "small"))
    assert size == 32 and "median shorter side (25 px) of 5 sampled images" in note
    write_images(tmp_path / "mid" / "train" / "x", [(130, 100), (100, 90), (200, 101)])
    assert default_image_size_choice(str(tmp_path / "mid"))[0] == 128
    write_images(tmp_path / "big", [(640, 480)])  # flat, unlabelled
    assert default_image_size_choice(str(tmp_path / "big"))[0] == 224  # capped
    cfg, notes = resolve_config(TrainConfig(data=str(tmp_path / "small")), restart_count=0)
    assert cfg.image_size == 32 and "--image-size" in notes[0]


def test_loss_backend_choices_are_the_registry():
    from fastclr.ops.backends import BACKENDS
    from fastclr.train.config import LOSS_BACKENDS

    assert set(LOSS_BACKENDS) == {"auto", *BACKENDS}
