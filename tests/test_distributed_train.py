"""`fastclr train` with `nproc: 2` in its --config file: the real CLI, launcher, trainer and gloo
process group, end to end.

A one-process run writes a checkpoint at step 2 (PATH). Then the two-worker run starts with
--resume PATH --max-restarts 1 (the file's `nproc: 2` must start two workers: the flag's default
must not replace it); once its own first checkpoint (step 4) is in --out, the rank-1 worker and its
data-loader processes are killed (SIGKILL, as a crashed machine would be). The elastic launcher must
restart the group, the group must resume from the newest checkpoint in --out (not from PATH again,
not from step 0), finish, and exit 0. Steps logged before the kill and again after the restart must
have the same loss (the resume is exact).

Parameter equality of a 2-process and a 1-process run on the same global batch is checked in
test_distributed_loss.py (a BN head with LARS under DDP): the trainer itself draws per-rank
augmentations and keeps backbone BN per rank, so its 2-process run is not the 1-process run.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastclr.checkpoint import list_checkpoints
from fastclr.cli.main import main

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 8
TIMEOUT_S = 240


def child_pids(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return pids


def descendants(root: int) -> list[int]:
    found, frontier = [], [root]
    while frontier:
        children = child_pids(frontier.pop())
        found += children
        frontier += children
    return found


def worker_pid(launcher: int, rank: int) -> int | None:
    """The worker of `rank` among the launcher's children (read from its environment)."""
    for pid in child_pids(launcher):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds workers through /proc")
def test_killed_worker_restarts_and_resumes_from_checkpoint(tmp_path):
    settings = [
        "--data", "digits", "--image-size", "8", "--batch-size", "16", "--epochs", "1",
        "--checkpoint-every", "2", "--log-every", "1", "--knn-every", "0",
        "--precision", "fp32", "--loader", "torch",
    ]  # fmt: skip
    first = tmp_path / "first"
    assert main(["train", *settings, "--max-steps", "2", "--out", str(first)]) == 0
    (resume_path,) = list_checkpoints(first)
    config = tmp_path / "workers.yaml"
    config.write_text("nproc: 2\n")
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "fastclr.cli.main", "train", "--config", str(config),
        "--max-restarts", "1", "--resume", str(resume_path), *settings,
        "--max-steps", str(MAX_STEPS), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    log_path = tmp_path / "launcher.log"  # a file, not a pipe: nobody reads a pipe while we poll
    with open(log_path, "w") as log_file:
        launcher = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        killed = None
        while killed is None and launcher.poll() is None and time.monotonic() < deadline:
            if list_checkpoints(out):
                killed = worker_pid(launcher.pid, rank=1)
                if killed is not None:  # the worker and its data-loader processes, as a crash would
                    for pid in [killed, *descendants(killed)]:
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        launcher.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if launcher.poll() is None:
            # A hang: tracebacks of the launcher and its workers (faulthandler), then stop them all
            # (workers run in sessions of their own, so the process group does not reach them).
            stuck = [launcher.pid, *descendants(launcher.pid)]
            for pid in stuck:
                os.kill(pid, signal.SIGABRT)
            time.sleep(2)
            for pid in stuck:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            launcher.wait()
            print(log_path.read_text()[-6000:])
    output = log_path.read_text()
    assert killed is not None, f"no checkpoint appeared before the run ended:\n{output[-3000:]}"
    assert launcher.returncode == 0, output[-3000:]

    records = read_log(out)
    starts = [i for i, r in enumerate(records) if r.get("event") == "start"]
    assert len(starts) == 2, (
        f"expected one restart, log has {len(starts)} starts:\n{output[-3000:]}"
    )
    assert [records[i]["world_size"] for i in starts] == [2, 2]  # the file's nproc: 2
    first_steps = {r["step"]: r["loss"] for r in records[: starts[1]] if r["kind"] == "step"}
    second_steps = {r["step"]: r["loss"] for r in records[starts[1] :] if r["kind"] == "step"}
    assert min(first_steps) == 3, "the first attempt did not start from --resume PATH (step 2)"
    resumed_at = min(second_steps) - 1
    assert "resumed from step" in output, output[-3000:]
    assert resumed_at >= 4 and resumed_at % 2 == 0, (
        f"restarted at step {resumed_at}: not the newest checkpoint in --out (>= 4)"
    )
    assert max(second_steps) == MAX_STEPS
    assert set(first_steps) | set(second_steps) >= set(range(3, MAX_STEPS + 1))
    for step in set(first_steps) & set(second_steps):
        assert first_steps[step] == second_steps[step], f"step {step} differs after the resume"
