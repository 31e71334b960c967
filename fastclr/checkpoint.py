"""Checkpoints that survive a killed job and reveal a damaged file.

Each checkpoint is an ordinary `torch.save` dict (load it with `torch.load(path, weights_only=True)`)
that also holds `sha256`, a digest of every other entry: tensor bytes, dtypes and shapes, and the
repr of every plain value. torch's zip reader catches a truncated file but not a flipped byte in a
tensor; the digest catches both.

Writes are atomic: the file is written to a temporary name unique to this process, fsynced, then
renamed over the final name, so a crash leaves either the previous checkpoint set or the new one,
never half a file. A failed write (disk full, read-only folder) removes its partial file, keeps the
previous checkpoints and raises a UsageError naming the folder. Rotation keeps the new checkpoint and
the newest `keep - 1` before it. `load_latest` tries them newest first and falls back, with a
warning, past any that fail to load or to verify.

Serving train and eval alike: `check_run_folder` refuses to start a run whose --out holds another
run's checkpoints or only unreadable ones (their steps would mix with the new run's), and
`resolve_checkpoint` turns `--checkpoint FILE | RUN_FOLDER` into one verified state.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import re
import socket
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from fastclr.errors import UsageError

CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)\.pt")


class CorruptCheckpointError(RuntimeError):
    """The file does not load, or its contents do not match the digest stored in it."""


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / f"checkpoint-{step:09d}.pt"


def checkpoint_step(path: Path) -> int:
    return int(CHECKPOINT_RE.fullmatch(path.name).group(1))


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Checkpoint files in `out_dir`, newest (highest step) first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.iterdir() if CHECKPOINT_RE.fullmatch(p.name)]
    return sorted(found, key=checkpoint_step, reverse=True)


def _update_digest(digest: Any, key: str, value: Any) -> None:
    digest.update(key.encode())
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for k in value:
            _update_digest(digest, f"{key}/{k!r}", value[k])
    elif isinstance(value, list | tuple):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for i, item in enumerate(value):
            _update_digest(digest, f"{key}[{i}]", item)
    else:
        digest.update(repr(value).encode())


def state_digest(state: dict[str, Any]) -> str:
    """sha256 over every entry of `state` except `sha256` itself."""
    digest = hashlib.sha256()
    for key in state:
        if key != "sha256":
            _update_digest(digest, key, state[key])
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _WriteErrorKeeper:
    """A file that keeps the OSError of a failed write: torch.save reports it only as an opaque
    RuntimeError ("unexpected pos ..."), which loses "no space left" or "read-only"."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def write_error(path: str | Path, error: OSError, flag: str = "--out") -> UsageError:
    """The one-line UsageError for a failed write of `path`: disk full, or not writable."""
    path = Path(path)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return UsageError(
            f"no space left on {path.parent} (writing {path.name}): free space there or pass "
            f"{flag} a folder on another disk; the files written before are kept"
        )
    reason = error.strerror or type(error).__name__
    return UsageError(
        f"cannot write {path} ({reason}): make its folder writable or pass {flag} a writable "
        "folder; the files written before are kept"
    )


def atomic_save(obj: Any, path: str | Path, flag: str = "--out") -> None:
    """torch.save(obj) to `path` through a temporary file renamed over it (fsynced, durable).

    A failed write removes the temporary file, leaves `path` and its folder as they were, and
    raises the UsageError of write_error (naming `flag`, the argument that chose the folder).
    """
    path = Path(path)
    # Unique to this process, so two writers (a refused second run, a stale rank) never share it.
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            keeper = _WriteErrorKeeper(f)
            try:
                torch.save(obj, keeper)
            except RuntimeError as error:
                if keeper.error is None:
                    raise
                raise keeper.error from error
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # ... and the rename itself is durable
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise write_error(path, error, flag) from error


def save_checkpoint(state: dict[str, Any], out_dir: str | Path, step: int, keep: int = 3) -> Path:
    """Atomically write `state` (plus its digest) as checkpoint-<step>.pt; keep it and the newest
    `keep - 1` checkpoints of lower steps.

    Files of higher steps are left alone: check_run_folder lets a run start only over unreadable
    ones (the damaged newest of the run it resumes), and the run overwrites or passes them.
    Raises UsageError (disk full, folder not writable) with the previous checkpoints untouched.
    """
    path = checkpoint_path(out_dir, step)
    atomic_save({**state, "sha256": state_digest(state)}, path)
    older = [p for p in list_checkpoints(out_dir) if checkpoint_step(p) < step]
    for old in older[max(keep, 1) - 1 :]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify one checkpoint. Raises CorruptCheckpointError if it is damaged."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # a truncated or garbled file fails in many ways inside torch.load
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CorruptCheckpointError(f"{path} does not load: {reason}") from error
    if not isinstance(state, dict) or "sha256" not in state:
        raise CorruptCheckpointError(f"{path} is not a fastclr checkpoint (no sha256 entry)")
    if state_digest(state) != state["sha256"]:
        raise CorruptCheckpointError(f"{path} is damaged: its contents do not match its sha256")
    return state


def load_latest(
    out_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in `out_dir` that loads and verifies, or None if there is none.

    A damaged newer file is skipped with a warning naming it; the previous one is used.
    """
    for path in list_checkpoints(out_dir):
        try:
            return path, load_checkpoint(path, map_location)
        except CorruptCheckpointError as error:
            warnings.warn(f"{error}; falling back to the previous checkpoint", stacklevel=2)
    return None


def _newest_readable(found: list[Path]) -> tuple[Path, dict[str, Any]] | None:
    for path in found:
        try:
            return path, load_checkpoint(path)
        except CorruptCheckpointError:
            continue
    return None


def load_resume_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(path, verified state) of `--resume PATH`; UsageError if it is missing or damaged."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(
            f"--resume {path} is a folder: pass one of its checkpoint-*.pt files, or "
            f"--resume auto --out {path} to continue its newest readable checkpoint"
        )
    try:
        return path, load_checkpoint(path)
    except FileNotFoundError:
        raise UsageError(
            f"--resume {path}: no such file: pass a checkpoint-*.pt of an earlier run, or "
            "--resume auto to continue the newest checkpoint in --out"
        ) from None
    except CorruptCheckpointError as error:
        raise UsageError(
            f"--resume: {error}; pass an earlier checkpoint of that run, or --resume auto to "
            "continue the newest readable checkpoint in --out"
        ) from error


def check_run_folder(out: str | Path, resume: str) -> None:
    """Refuse to start a run whose checkpoints would mix with others already in `out`.

    Call it on the main rank before anything is written to `out`. resume "none": `out` must hold
    no checkpoint. "auto": if it holds any, one must be readable (the run continues the newest
    readable one; a fresh start would write low steps between high ones the rotation cannot
    order). A PATH: it must load, and `out` must hold no checkpoint or have PATH (the same
    contents) as its newest readable one. Raises UsageError naming --out/--resume and the fix.
    """
    found = list_checkpoints(out)
    if resume == "none":
        if found:
            raise UsageError(
                f"--out {out} holds checkpoints of an earlier run (newest {found[0].name}): pass "
                "--resume auto to continue it, or --out NEW_FOLDER to start another"
            )
        return
    resumed = None if resume == "auto" else load_resume_checkpoint(resume)
    if not found or (resumed is not None and found[0].resolve() == resumed[0].resolve()):
        return  # nothing to mix with, or PATH is the folder's newest (loaded and verified above)
    newest = _newest_readable(found)
    if newest is None:
        raise UsageError(
            f"--out {out}: none of its {len(found)} checkpoints is readable (newest "
            f"{found[0].name}), so this run would restart and mix its checkpoints with them: "
            f"move them out of {out}, or pass --out NEW_FOLDER"
        )
    if resumed is not None and resumed[1]["sha256"] != newest[1]["sha256"]:
        raise UsageError(
            f"--resume {resume} (step {resumed[1].get('step')}) does not continue --out {out}, "
            f"whose newest checkpoint is {newest[0].name} (step {newest[1].get('step')}): their "
            f"checkpoints would mix; pass --out NEW_FOLDER to continue {resume} there, or "
            f"--resume auto to continue {out}"
        )


def resolve_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]]:
    """(file, verified state) of `--checkpoint PATH`: a checkpoint file, or a run folder meaning
    its newest readable checkpoint (a damaged newer one is skipped with a warning)."""
    path = Path(path)
    if path.is_dir():
        found = load_latest(path, map_location)
        if found is None:
            raise UsageError(
                f"--checkpoint {path}: the folder holds no readable checkpoint-*.pt: pass the "
                "--out folder of a fastclr train run, or one of its checkpoint files"
            )
        return found
    try:
        return path, load_checkpoint(path, map_location)
    except FileNotFoundError:
        raise UsageError(
            f"--checkpoint {path}: no such file or folder: pass a run's --out folder (its newest "
            "checkpoint is used) or one of its checkpoint-*.pt files"
        ) from None
    except CorruptCheckpointError as error:
        raise UsageError(
            f"--checkpoint: {error}; pass another checkpoint of that run, or its run folder to "
            "use the newest readable one"
        ) from error


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (if initialized) CUDA generator states, as loadable types."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
