"""`fastclr eval` and `fastclr export` through the real entry point: a run folder as --checkpoint
(issue 12.16), and one-line errors with exit status 2 for values and environments that cannot work
(issue 12.8, 12.13, 12.15). The checkpoints hold an untrained ResNet-18 (CIFAR stem): nothing
trains, the evaluations run on 24 + 6 synthetic images at 8 px."""

import subprocess
import sys

import pytest
import torch

from fastclr.checkpoint import save_checkpoint
from fastclr.model import SimCLRModel

CONFIG = {"arch": "resnet18", "stem": "cifar", "proj_dim": 16, "data": "synthetic:24"}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder with checkpoints at steps 3, 6 and a truncated (damaged) 9."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = SimCLRModel(CONFIG["arch"], CONFIG["stem"], CONFIG["proj_dim"])
    for step in (3, 6, 9):
        state = {"model": model.state_dict(), "step": step, "config": {**CONFIG, "image_size": 8}}
        path = save_checkpoint(state, folder, step)
    path.write_bytes(path.read_bytes()[:1000])
    return folder


def fastclr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastclr.cli.main", *args], capture_output=True, text=True
    )


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("fastclr ") and all(f in line for f in fragments), line


def test_eval_and_export_take_a_run_folder(run_folder, tmp_path):
    """Before: the README's checkpoint-*.pt expanded to three files; a folder did not load."""
    result = fastclr("eval", "knn", "--checkpoint", str(run_folder), "--k", "5")
    assert result.returncode == 0, result.stderr
    assert "checkpoint-000000009.pt" in result.stderr  # the damaged newest is named, skipped
    assert f"evaluating {run_folder / 'checkpoint-000000006.pt'}" in result.stderr
    assert "kNN (k=5, T=0.1) top-1 on synthetic:24 val" in result.stdout
    output = tmp_path / "backbone.pt"
    result = fastclr("export", "--checkpoint", str(run_folder), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "checkpoint-000000006.pt" in result.stderr
    assert (
        torch.load(output, weights_only=True).keys() == SimCLRModel().backbone.state_dict().keys()
    )


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        # 12.8: k 0 printed 10.00%
        (["knn", "--k", "0"], ["--k must be at least 1, got 0", "recommended: 200"]),
        (["knn", "--temperature", "0"], ["--temperature must be > 0"]),
        # 12.13: a probe of 0 epochs printed its random init's score
        (["linear", "--epochs", "0"], ["--epochs must be at least 1, got 0"]),
        (["knn", "--device", "tpu"], ["--device 'tpu' is not a device here"]),
    ],
)
def test_meaningless_values_are_refused(run_folder, args, fragments):
    mode, *rest = args
    assert_refused(fastclr("eval", mode, "--checkpoint", str(run_folder), *rest), *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_refused(run_folder):
    """12.13/12.15: a torch traceback about the CUDA driver before."""
    result = fastclr("eval", "linear", "--checkpoint", str(run_folder), "--device", "cuda")
    assert_refused(result, "--device cuda: torch sees no CUDA GPU", "--device cpu")


def test_missing_data_and_checkpoint_are_named(run_folder, tmp_path):
    """12.15: ValueError / FileNotFoundError tracebacks (or a bare 'error:' line) before."""
    missing = tmp_path / "nonexistent"
    result = fastclr("eval", "knn", "--checkpoint", str(run_folder), "--data", str(missing))
    assert_refused(result, f"--data {missing}: image folder", "does not exist")
    result = fastclr("export", "--checkpoint", str(missing))
    assert_refused(result, f"--checkpoint {missing}: no such file or folder")
    damaged = run_folder / "checkpoint-000000009.pt"
    result = fastclr("eval", "knn", "--checkpoint", str(damaged))
    assert_refused(result, f"--checkpoint: {damaged} does not load")
