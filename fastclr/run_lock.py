"""One run per folder: a lock file in --out that names its owner (pid, host) while a run holds it.

Two runs writing one folder would mix their checkpoints, overwrite each other's config.json and
interleave their logs. `hold_run_folder(out)` creates `<out>/LOCK_NAME` atomically (O_EXCL) with
the owner's pid, host and start time, and removes it when the run ends, however it ends. A second
run is refused with a UsageError naming the owner. A lock left by a killed run (its pid no longer
exists on this host) is taken over with a warning; a lock of another host cannot be checked from
here, so the message says how to remove it by hand. Only the main rank of a distributed run holds
it (the other ranks write nothing to --out).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastclr.checkpoint import write_error
from fastclr.errors import UsageError

LOCK_NAME = "fastclr.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: no signal sent, only the existence check
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _read_owner(lock: Path) -> dict[str, Any] | None:
    """The lock's owner record, or None if the file vanished or is not one (half-written)."""
    try:
        owner = json.loads(lock.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _create(lock: Path, owner: dict[str, Any]) -> bool:
    """Create the lock file with `owner` in it; False if it exists already."""
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(owner) + "\n")
    return True


def _take_over_if_stale(lock: Path, host: str) -> bool:
    """Remove a lock whose owner pid is dead on this host (with a warning); True if removed."""
    owner = _read_owner(lock)
    if owner is None or owner.get("host") != host or _pid_alive(int(owner.get("pid", -1))):
        return False
    # Rename first: of two runs racing to take over, only one rename succeeds.
    claimed = lock.with_name(f"{lock.name}.stale-{os.getpid()}")
    try:
        os.rename(lock, claimed)
    except FileNotFoundError:
        return False
    claimed.unlink()
    warnings.warn(
        f"{lock} was left by pid {owner.get('pid')} on {host}, which is no longer running: "
        "taking the folder over",
        stacklevel=4,
    )
    return True


def acquire_run_folder(out: str | Path) -> Path:
    """Create `out` if needed and take its lock; returns the lock file. See hold_run_folder."""
    out = Path(out)
    host = socket.gethostname()
    owner = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    lock = out / LOCK_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
        if _create(lock, owner) or (_take_over_if_stale(lock, host) and _create(lock, owner)):
            return lock
    except OSError as error:
        raise write_error(lock, error) from error
    holder = _read_owner(lock) or {}
    raise UsageError(
        f"--out {out} is in use by another fastclr run (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {holder.get('started', '?')}): wait for it to end or "
        f"pass --out NEW_FOLDER; if that run is gone, delete {lock}"
    )


def release_run_folder(lock: Path) -> None:
    """Remove the lock if this process still owns it."""
    owner = _read_owner(lock)
    if owner is not None and owner.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


@contextlib.contextmanager
def hold_run_folder(out: str | Path) -> Iterator[Path]:
    """Hold `out` for one run: create it, take its lock, release it on exit (also on errors).

    Raises UsageError if another live run holds it, or if `out` cannot be created or written.
    """
    lock = acquire_run_folder(out)
    try:
        yield lock
    finally:
        release_run_folder(lock)
