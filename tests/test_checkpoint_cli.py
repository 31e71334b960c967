"""`fastclr train` through the real entry point: runs that would mix, lose or fail to write work
are refused with one line and exit status 2, before anything in --out changes (issue 12.1, 12.2,
12.6, 12.15). Only the last test trains (one step of ResNet-18 at 8 px)."""

import json
import socket
import subprocess
import sys

import torch

from fastclr.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from fastclr.run_lock import LOCK_NAME

TINY = [
    "--data", "synthetic:24", "--image-size", "8", "--batch-size", "8", "--device", "cpu",
    "--loader", "torch", "--workers", "0", "--precision", "fp32", "--knn-every", "0",
    "--epochs", "1",
]  # fmt: skip


def fastclr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastclr.cli.main", *args], capture_output=True, text=True
    )


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert all(f in line for f in fragments), line


def fake_run(folder, steps, seed):
    """A folder of checkpoints as another run would leave it (state entries are not trained)."""
    for step in steps:
        save_checkpoint({"model": {"w": torch.randn(5)}, "step": step, "seed": seed}, folder, step)
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    return list_checkpoints(folder)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_all_unreadable_checkpoints_with_resume_auto_are_refused(tmp_path):
    """Before: restarted from step 0 with warnings, then rotation deleted each new checkpoint."""
    for path in fake_run(tmp_path, [30, 40, 50], seed=1):
        path.write_bytes(path.read_bytes()[:100])
    before = snapshot(tmp_path)
    result = fastclr("train", *TINY, "--out", str(tmp_path), "--resume", "auto")
    assert_refused(result, "none of its 3 checkpoints is readable", "--out NEW_FOLDER")
    assert snapshot(tmp_path) == before


def test_resume_path_into_another_runs_folder_is_refused(tmp_path):
    """Before: trained into it, overwrote its config.json, rotation deleted the new checkpoints."""
    (mine,) = fake_run(tmp_path / "mine", [3], seed=1)
    other = tmp_path / "other"
    fake_run(other, [10, 20, 30], seed=2)
    before = snapshot(other)
    result = fastclr("train", *TINY, "--out", str(other), "--resume", str(mine))
    assert_refused(result, f"--resume {mine} (step 3) does not continue --out {other}")
    assert snapshot(other) == before  # config.json too


def test_resume_from_a_missing_or_truncated_file_is_named(tmp_path):
    """Before: FileNotFoundError / CorruptCheckpointError tracebacks."""
    missing = tmp_path / "gone.pt"
    assert_refused(fastclr("train", *TINY, "--out", str(tmp_path / "a"), "--resume", str(missing)),
                   f"--resume {missing}: no such file")  # fmt: skip
    (path,) = fake_run(tmp_path / "run", [3], seed=1)
    path.write_bytes(path.read_bytes()[:500])
    assert_refused(fastclr("train", *TINY, "--out", str(tmp_path / "b"), "--resume", str(path)),
                   f"--resume: {path} does not load")  # fmt: skip


def test_unwritable_out_is_named(tmp_path):
    """Before: a traceback. chmod does not stop root: a file stands where the folder goes."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = fastclr("train", *TINY, "--out", str(blocker / "run"))
    assert_refused(result, f"cannot write {blocker}/run/{LOCK_NAME}", "--out a writable folder")


def test_second_run_into_a_held_folder_is_refused(tmp_path):
    """Before: both ran, sharing one .tmp name; the folder mixed both runs' files."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        owner = {"pid": sleeper.pid, "host": socket.gethostname(), "started": "today"}
        tmp_path.joinpath(LOCK_NAME).write_text(json.dumps(owner))
        result = fastclr("train", *TINY, "--out", str(tmp_path))
        assert_refused(result, f"in use by another fastclr run (pid {sleeper.pid} on")
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_run_takes_over_a_dead_runs_lock_and_releases_it(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    owner = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "yesterday"}
    tmp_path.joinpath(LOCK_NAME).write_text(json.dumps(owner))
    result = fastclr("train", *TINY, "--out", str(tmp_path), "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    assert f"left by pid {owner['pid']}" in result.stderr and "no longer running" in result.stderr
    assert not tmp_path.joinpath(LOCK_NAME).exists()
    assert not list(tmp_path.glob("*.tmp"))
    (checkpoint,) = list_checkpoints(tmp_path)
    assert load_checkpoint(checkpoint)["step"] == 1
    end = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert end["last_checkpoint"] == str(checkpoint)
