"""`fastclr train --nproc 2`: the real CLI, launcher, trainer and gloo process group, end to end.

One run of a few steps with --max-restarts 1; once the first checkpoint is on disk, the rank-1 worker
and its data-loader processes are killed (SIGKILL, as a crashed machine would be). The elastic launcher must restart the group, the
group must resume from the last checkpoint (not from step 0), finish, and exit 0. Steps logged before
the kill and again after the restart must have the same loss (the resume is exact).

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
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "fastclr.cli.main", "train",
        "--nproc", "2", "--max-restarts", "1",
        "--data", "digits", "--image-size", "8", "--batch-size", "16", "--epochs", "1",
        "--max-steps", str(MAX_STEPS), "--checkpoint-every", "2", "--log-every", "1",
        "--knn-every", "0", "--precision", "fp32", "--loader", "torch", "--out", str(out),
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
    first_steps = {r["step"]: r["loss"] for r in records[: starts[1]] if r["kind"] == "step"}
    second_steps = {r["step"]: r["loss"] for r in records[starts[1] :] if r["kind"] == "step"}
    resumed_at = min(second_steps) - 1
    assert "resumed from step" in output, output[-3000:]
    assert resumed_at >= 2 and resumed_at % 2 == 0, (
        f"resumed at step {resumed_at}, not a checkpoint"
    )
    assert max(second_steps) == MAX_STEPS
    assert set(first_steps) | set(second_steps) >= set(range(1, MAX_STEPS + 1))
    for step in set(first_steps) & set(second_steps):
        assert first_steps[step] == second_steps[step], f"step {step} differs after the resume"
