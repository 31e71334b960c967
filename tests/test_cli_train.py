"""`fastclr train` through the real entry point in a subprocess: a bad setting, from a flag or a
config file, is one line naming it and the fix, exit status 2, no traceback, and nothing written;
a refused resume leaves the run folder as it was."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastclr import checkpoint
from fastclr.cli.main import main

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--data", "synthetic:24", "--image-size", "8", "--batch-size", "8", "--device", "cpu",
    "--loader", "torch", "--workers", "0", "--precision", "fp32", "--knn-every", "0",
]  # fmt: skip


def fastclr(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "fastclr.cli.main", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def assert_usage_error(result: subprocess.CompletedProcess, *named: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastclr train: error: "), result.stderr
    for text in named:
        assert text in lines[0], lines[0]


FLAG_CASES = {
    "batch-size-1": (["--batch-size", "1"], ["--batch-size 1", ">= 2", "negative"]),
    "image-size-0": (["--image-size", "0"], ["--image-size 0", ">= 1"]),
    "crop-scale-0": (["--crop-scale", "0"], ["--crop-scale 0.0", "(0, 1]"]),
    "log-every-0": (["--log-every", "0"], ["--log-every 0", ">= 1"]),
    "epochs-0": (["--epochs", "0"], ["--epochs 0", ">= 1"]),
    "device-tpu": (["--device", "tpu"], ["--device 'tpu'", "cpu, cuda"]),
    "device-cuda": (["--device", "cuda"], ["--device cuda", "no CUDA GPU", "--device cpu"]),
    "resume-missing": (["--resume", "no/such.pt"], ["--resume no/such.pt", "no such file"]),
    "data-missing": (["--data", "no/such/folder"], ["--data no/such/folder", "no such folder"]),
    "arch-unknown": (["--arch", "resnet5"], ["--arch 'resnet5'", "did you mean", "resnet50"]),
    "stem-on-vit": (["--arch", "vit_b_16", "--stem", "cifar"], ["--stem cifar", "ResNet"]),
    "view-blur-p-count": (
        ["--method", "byol", "--view-blur-p", "1.0,0.1,0.5"],
        ["--view-blur-p 1,0.1,0.5", "for --views 2", "one per global view"],
    ),
    "view-solarize-p-range": (
        ["--view-solarize-p", "0.0,1.5"],
        ["--view-solarize-p 0.0,1.5", "in [0, 1]"],
    ),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_bad_flag_is_one_line_naming_it(tmp_path, case):
    if case == "device-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    flags, named = FLAG_CASES[case]
    out = tmp_path / "run"
    result = fastclr("train", *TINY, "--out", str(out), *flags, cwd=tmp_path)
    assert_usage_error(result, *named)
    assert "WarmupCosine" not in result.stderr
    assert not out.exists()  # refused before anything was written or loaded


FILE_CASES = {
    "wrong-type": ("epochs: one\n", ["epochs: in", "'one'", "whole number"]),
    "quoted-number": ('batch_size: "32"\n', ["batch_size: in", "without quotes"]),
    "fraction": ("epochs: 1.5\n", ["epochs: in", "whole number"]),
    "quoted-bool": ('channels_last: "no"\n', ["channels_last: in", "true or false"]),
    "malformed": ("epochs: [1\n", ["not valid YAML at line 2", "fix the file"]),
    "per-view": ("view_blur_p: [1.0, 2]\n", ["view_blur_p: in", "1.0,2", "in [0, 1]"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES) + ["missing"])
def test_bad_config_file_is_one_line_naming_the_key(tmp_path, case):
    path = tmp_path / "run.yaml"
    if case == "missing":
        named = ["run.yaml", "no such file"]
    else:
        text, named = FILE_CASES[case]
        path.write_text(text)
    out = tmp_path / "run"
    result = fastclr("train", *TINY, "--out", str(out), "--config", str(path), cwd=tmp_path)
    assert_usage_error(result, *named)
    assert not out.exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A resnet18 run at batch 8 with one checkpoint (step 1)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--max-steps", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--arch", "resnet50"], ["arch: resnet18 -> resnet50", "--out NEW_FOLDER"]),
        (["--batch-size", "12"], ["--batch-size 12", "--batch-size 8 to continue it"]),
    ],
)
def test_refused_resume_leaves_the_run_folder_alone(tmp_path, trained_run, flags, named):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    changed = [*TINY, "--epochs", "2", "--out", str(out), *flags]
    result = fastclr("train", *changed, cwd=tmp_path)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # config.json, log.jsonl and the checkpoint untouched
    assert_usage_error(result, *named)
    assert json.loads((out / "config.json").read_text())["arch"] == "resnet18"
    (kept,) = checkpoint.list_checkpoints(out)
    assert checkpoint.load_checkpoint(kept)["step"] == 1


def test_resume_with_nothing_left_to_train_says_so(tmp_path, trained_run, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    assert main(["train", *TINY, "--epochs", "1", "--max-steps", "1", "--out", str(out)]) == 0
    assert "nothing to train: the run is at step 1 of 1" in capsys.readouterr().err
    (kept,) = checkpoint.list_checkpoints(out)
    assert checkpoint.load_checkpoint(kept)["step"] == 1


def test_run_draws_curves_logs_tensorboard_and_builds_the_v2_head(tmp_path):
    out = tmp_path / "run"
    flags = ["--epochs", "1", "--max-steps", "3", "--log-every", "1", "--tensorboard"]
    assert main(["train", *TINY, *flags, "--proj-layers", "3", "--out", str(out)]) == 0
    png = (out / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((out / "config.json").read_text())["proj_layers"] == 3
    state = checkpoint.load_checkpoint(checkpoint.list_checkpoints(out)[0])
    head_linears = [k for k in state["model"] if k.startswith("head.") and k.endswith(".weight")]
    assert len([k for k in head_linears if state["model"][k].dim() == 2]) == 3


def test_tensorboard_without_the_package_says_how_to_install(monkeypatch):
    import importlib.util

    from fastclr.errors import UsageError
    from fastclr.train.config import check_tensorboard

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "tensorboard" else real(name)
    )
    with pytest.raises(UsageError, match="pip install tensorboard"):
        check_tensorboard(True)
    check_tensorboard(False)
