"""One run per folder (issue 12.2): the lock names its owner, refuses a second run while the owner
lives, is taken over from a dead owner on this host, and is released however the run ends."""

import json
import os
import socket
import subprocess
import sys

import pytest

from fastclr.errors import UsageError
from fastclr.run_lock import LOCK_NAME, hold_run_folder


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01 00:00:00"}
    (folder / LOCK_NAME).write_text(json.dumps(owner))


def test_lock_names_its_owner_and_is_released(tmp_path):
    out = tmp_path / "new" / "run"
    with hold_run_folder(out) as lock:
        owner = json.loads(lock.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert not lock.exists()
    with pytest.raises(RuntimeError), hold_run_folder(out) as lock:
        raise RuntimeError("the run failed")
    assert not lock.exists()  # released on errors too


def test_second_run_is_refused_while_the_first_holds_the_folder(tmp_path):
    with hold_run_folder(tmp_path) as lock:
        refused = rf"in use by .*pid {os.getpid()} on .*NEW_FOLDER"
        with pytest.raises(UsageError, match=refused), hold_run_folder(tmp_path):
            pass
        assert lock.exists()  # the refused attempt leaves the owner's lock alone
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, sleeper.pid)
        with pytest.raises(UsageError, match=f"pid {sleeper.pid}"), hold_run_folder(tmp_path):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_warning(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, pid)
    warned = pytest.warns(UserWarning, match=f"pid {pid} .* no longer running")
    with warned, hold_run_folder(tmp_path) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_another_host_is_not_taken_over(tmp_path):
    write_lock(tmp_path, dead_pid(), host="another-host.example")
    refused = rf"another-host.example.*delete {tmp_path}"
    with pytest.raises(UsageError, match=refused), hold_run_folder(tmp_path):
        pass


def test_unwritable_folder_is_a_usage_error(tmp_path):
    """Issue 12.6 at start: chmod does not stop root, so a file stands where the folder goes."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    refused = r"^cannot write .*file/run/fastclr.lock"
    with pytest.raises(UsageError, match=refused), hold_run_folder(blocker / "run"):
        pass
