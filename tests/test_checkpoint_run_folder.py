"""Run folders: rotation never deletes the new checkpoint, runs never mix, writes fail cleanly.

Checkpoints here are small hand-made states (a random tensor, a step, a seed); nothing trains.
"""

import errno
import os
import random

import pytest
import torch

import fastclr.checkpoint as checkpoint_module
from fastclr.checkpoint import (
    check_run_folder,
    checkpoint_path,
    list_checkpoints,
    load_resume_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from fastclr.errors import UsageError


def state(step: int, seed: int = 0) -> dict:
    return {"model": {"w": torch.randn(33, 7)}, "step": step, "config": {"seed": seed}}


def save_run(folder, steps, seed=0, keep=3):
    return [save_checkpoint(state(s, seed), folder, s, keep=keep) for s in steps]


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def steps_in(folder) -> list[int]:
    return [int(p.name[11:20]) for p in list_checkpoints(folder)]


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_rotation_keeps_the_new_checkpoint_below_higher_step_files(tmp_path, keep):
    """Issue 12.1: with higher-step files in the folder, keep-K deleted each new checkpoint."""
    high = random.randint(50, 90)
    save_run(tmp_path, [high, high + 1, high + 2], keep=5)
    for path in list_checkpoints(tmp_path):
        truncate(path)  # the damaged newest of the run that resumes below them
    written = save_run(tmp_path, range(1, 6), keep=keep)
    assert all(p.exists() for p in written[-keep:])  # the newest `keep` of this run survive ...
    assert not any(p.exists() for p in written[:-keep])  # ... the older ones rotate away ...
    assert steps_in(tmp_path)[:3] == [high + 2, high + 1, high]  # ... higher files untouched
    save_run(tmp_path, [high + 1], keep=keep)  # reaching their steps overwrites them
    below = ([high] + [5, 4, 3][:keep])[: keep - 1]
    assert steps_in(tmp_path) == [high + 2, high + 1, *below]


def test_fresh_run_refuses_a_folder_with_checkpoints(tmp_path):
    check_run_folder(tmp_path / "new", "none")
    save_run(tmp_path, [3])
    with pytest.raises(UsageError, match=r"--out .* --resume auto .* --out NEW_FOLDER"):
        check_run_folder(tmp_path, "none")


def test_auto_resume_refuses_a_folder_of_only_unreadable_checkpoints(tmp_path):
    """Issue 12.1: all corrupt + --resume auto restarted at step 0 among them."""
    check_run_folder(tmp_path, "auto")  # empty: a fresh start
    paths = save_run(tmp_path, [4, 8])
    truncate(paths[1])
    with pytest.warns(UserWarning, match="falling back"):  # the trainer's fallback, unchanged
        assert checkpoint_module.load_latest(tmp_path)[1]["step"] == 4
    check_run_folder(tmp_path, "auto")  # one readable: continue it
    paths[0].write_bytes(b"garbage")
    with pytest.raises(UsageError, match=r"none of its 2 checkpoints is readable.*NEW_FOLDER"):
        check_run_folder(tmp_path, "auto")


def test_resume_path_must_continue_the_folder_it_writes_to(tmp_path):
    """Issue 12.1: --resume PATH into a folder of another run's (higher-step) checkpoints."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    (resume_from,) = save_run(mine, [3], seed=1)
    check_run_folder(tmp_path / "empty", str(resume_from))  # continue PATH in a new folder
    check_run_folder(mine, str(resume_from))  # PATH is the folder's newest
    for steps in ([9], [1]):  # another run's checkpoints, higher or lower
        save_run(other, steps, seed=2)
        with pytest.raises(UsageError, match=r"does not continue --out .*--out NEW_FOLDER"):
            check_run_folder(other, str(resume_from))
    save_run(mine, [6], seed=1)  # the same run, rewound: its step 6 would be replaced
    with pytest.raises(UsageError, match="checkpoint-000000006.pt"):
        check_run_folder(mine, str(resume_from))
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / resume_from.name).write_bytes(resume_from.read_bytes())
    check_run_folder(copy, str(mine / resume_from.name))  # same contents: the same run


def test_resume_from_missing_truncated_or_folder_path_says_so(tmp_path):
    """Issue 12.15: a traceback (FileNotFoundError, CorruptCheckpointError) before."""
    (path,) = save_run(tmp_path, [2])
    assert load_resume_checkpoint(path)[1]["step"] == 2
    with pytest.raises(UsageError, match=r"--resume .*missing.pt: no such file.*--resume auto"):
        load_resume_checkpoint(tmp_path / "missing.pt")
    truncate(path)
    with pytest.raises(UsageError, match=r"^--resume: .* does not load: .*--resume auto"):
        load_resume_checkpoint(path)
    with pytest.raises(UsageError, match="is a folder"):
        load_resume_checkpoint(tmp_path)


def test_checkpoint_argument_takes_a_run_folder(tmp_path):
    """Issue 12.16: --checkpoint RUN_FOLDER is its newest readable checkpoint."""
    paths = save_run(tmp_path, [1, 2, 3])
    assert resolve_checkpoint(tmp_path)[0] == paths[2]
    assert resolve_checkpoint(paths[0])[1]["step"] == 1
    truncate(paths[2])
    with pytest.warns(UserWarning, match="checkpoint-000000003.pt"):
        assert resolve_checkpoint(tmp_path)[0] == paths[1]
    with pytest.raises(UsageError, match=r"--checkpoint: .*000000003.pt does not load"):
        resolve_checkpoint(paths[2])
    with pytest.raises(UsageError, match="no such file or folder"):
        resolve_checkpoint(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="holds no readable checkpoint"):
        resolve_checkpoint(empty)


class FailingFile:
    """Stands in for the checkpoint's temporary file: writes fail with `code` after 1 kB."""

    def __init__(self, real, code):
        self.real, self.code, self.written = real, code, 0

    def write(self, data):
        self.written += len(data)
        if self.written > 1024:
            raise OSError(self.code, os.strerror(self.code))
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (errno.ENOSPC, r"^no space left on .*checkpoint-000000002.pt"),
        (errno.EROFS, "^cannot write"),
    ],
)
def test_failed_write_is_named_partial_file_removed_previous_kept(
    tmp_path, monkeypatch, code, message
):
    """Issue 12.6: disk full gave torch's "unexpected pos" and left a .tmp behind."""
    (first,) = save_run(tmp_path, [1])
    real_open = open

    def failing_open(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return FailingFile(file, code) if str(path).endswith(".tmp") else file

    monkeypatch.setattr(checkpoint_module, "open", failing_open, raising=False)
    with pytest.raises(UsageError, match=message) as raised:
        save_checkpoint(state(2), tmp_path, 2)
    assert "--out" in str(raised.value) and "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no partial file
    monkeypatch.undo()
    assert checkpoint_module.load_checkpoint(first)["step"] == 1


def test_unwritable_folder_is_named(tmp_path):
    """Issue 12.6: a read-only --out gave a traceback. chmod does not stop root, so the folder's
    place is taken by a file (the same OSError path: the folder cannot be created)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match=r"^cannot write .*file/run/checkpoint-000000001.pt"):
        save_checkpoint(state(1), blocker / "run", 1)


def test_temporary_names_are_unique_per_process(tmp_path, monkeypatch):
    """Issue 12.2: two runs used the same checkpoint-N.pt.tmp."""
    names = []
    real_replace = os.replace

    def spy(src, dst):
        names.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", spy)
    save_run(tmp_path, [1])
    assert names[0].startswith("checkpoint-000000001.pt.") and names[0].endswith(".tmp")
    assert f"-{os.getpid()}." in names[0]
    assert checkpoint_path(tmp_path, 1).exists() and not list(tmp_path.glob("*.tmp"))
