"""Checkpoints that survive a killed job and reveal a damaged file.

Each checkpoint is an ordinary `torch.save` dict (load it with `torch.load(path, weights_only=True)`)
that also holds `sha256`, a digest of every other entry: tensor bytes, dtypes and shapes, and the
repr of every plain value. torch's zip reader catches a truncated file but not a flipped byte in a
tensor; the digest catches both.

Writes are atomic: the file is written to `<name>.tmp`, fsynced, then renamed over the final name,
so a crash leaves either the previous checkpoint set or the new one, never half a file. The newest
`keep` checkpoints are kept. `load_latest` tries them newest first and falls back, with a warning,
past any that fail to load or to verify.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)\.pt")


class CorruptCheckpointError(RuntimeError):
    """The file does not load, or its contents do not match the digest stored in it."""


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / f"checkpoint-{step:09d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Checkpoint files in `out_dir`, newest (highest step) first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.iterdir() if CHECKPOINT_RE.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.fullmatch(p.name).group(1)), reverse=True)


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


def save_checkpoint(state: dict[str, Any], out_dir: str | Path, step: int, keep: int = 3) -> Path:
    """Atomically write `state` (plus its digest) as checkpoint-<step>.pt; keep the newest `keep`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(out_dir, step)
    tmp = path.with_name(path.name + ".tmp")
    payload = {**state, "sha256": state_digest(state)}
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the name points at them
    os.replace(tmp, path)
    _fsync_dir(out_dir)  # ... and the rename itself is durable
    for old in list_checkpoints(out_dir)[max(keep, 1) :]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify one checkpoint. Raises CorruptCheckpointError if it is damaged."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # a truncated or garbled file fails in many ways inside torch.load
        raise CorruptCheckpointError(f"{path} does not load: {error}") from error
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
