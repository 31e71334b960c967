"""Checkpoint files: atomic writes, keep-last-K, damage detection and fallback, RNG round trip."""

import random

import numpy as np
import pytest
import torch

from fastclr.checkpoint import (
    CorruptCheckpointError,
    capture_rng_state,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    restore_rng_state,
    save_checkpoint,
)


def make_state(step: int) -> dict:
    return {
        "model": {"weight": torch.randn(64, 32), "half": torch.randn(8, dtype=torch.bfloat16)},
        "step": step,
        "config": {"lr": 0.3, "data": "digits", "workers": None},
        "rng": [capture_rng_state()],
    }


def test_save_keeps_last_k_and_loads_with_plain_torch(tmp_path):
    for step in (5, 10, 15, 20):
        save_checkpoint(make_state(step), tmp_path, step, keep=3)
    assert list_checkpoints(tmp_path) == [checkpoint_path(tmp_path, s) for s in (20, 15, 10)]
    assert not list(tmp_path.glob("*.tmp"))  # the temporary files were renamed away
    plain = torch.load(checkpoint_path(tmp_path, 20), weights_only=True)
    assert plain["step"] == 20 and isinstance(plain["sha256"], str)
    assert load_checkpoint(checkpoint_path(tmp_path, 20))["step"] == 20


def flip_byte_in_tensor(path, tensor: torch.Tensor) -> None:
    """Flip one byte inside `tensor`'s stored bytes: the zip container still reads."""
    data = bytearray(path.read_bytes())
    offset = bytes(data).find(tensor.numpy().tobytes())
    assert offset >= 0
    data[offset + 17] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_byte_is_detected_and_previous_checkpoint_used(tmp_path):
    older, newer = make_state(1), make_state(2)
    save_checkpoint(older, tmp_path, 1)
    save_checkpoint(newer, tmp_path, 2)
    damaged = checkpoint_path(tmp_path, 2)
    flip_byte_in_tensor(damaged, newer["model"]["weight"])
    torch.load(damaged, weights_only=True)  # torch alone does not notice ...
    with pytest.raises(CorruptCheckpointError, match="sha256"):  # ... the digest does
        load_checkpoint(damaged)
    with pytest.warns(UserWarning, match="falling back to the previous checkpoint"):
        path, state = load_latest(tmp_path)
    assert path == checkpoint_path(tmp_path, 1) and state["step"] == 1
    assert torch.equal(state["model"]["weight"], older["model"]["weight"])


def test_truncated_and_garbage_files_are_detected(tmp_path):
    save_checkpoint(make_state(1), tmp_path, 1)
    save_checkpoint(make_state(2), tmp_path, 2)
    save_checkpoint(make_state(3), tmp_path, 3)
    newest, middle = checkpoint_path(tmp_path, 3), checkpoint_path(tmp_path, 2)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # killed mid-copy
    middle.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning) as warned:
        path, state = load_latest(tmp_path)
    assert state["step"] == 1 and len(warned) == 2
    assert str(newest) in str(warned[0].message) and str(middle) in str(warned[1].message)
    with pytest.raises(CorruptCheckpointError, match="does not load"):
        load_checkpoint(newest)


def test_no_checkpoint_gives_none(tmp_path):
    assert load_latest(tmp_path) is None
    assert load_latest(tmp_path / "missing") is None


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    state = make_state(7)
    save_checkpoint(state, tmp_path, 7)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    random.seed(123), np.random.seed(123), torch.manual_seed(123)  # scramble
    restore_rng_state(load_checkpoint(checkpoint_path(tmp_path, 7))["rng"][0])
    got = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
