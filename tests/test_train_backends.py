"""The fused loss backends train like the reference: the same loss curve from the same seed.

Without CUDA the triton kernels run through the Triton interpreter (TRITON_INTERPRET=1, set in
conftest.py before triton is imported).
"""

import json

import pytest
import torch

from fastclr.ops.backends import BACKENDS
from fastclr.train.config import TrainConfig
from fastclr.train.loop import train

STEPS = 4


def loss_curve(out, backend: str) -> list[float]:
    cfg = TrainConfig(
        data="synthetic:24", image_size=8, batch_size=8, epochs=2, max_steps=STEPS,
        loss_backend=backend, device="cpu", loader="torch", workers=0, precision="fp32",
        knn_every=0, log_every=1, checkpoint_every=0, out=str(out), seed=3,
    )  # fmt: skip
    train(cfg)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "step"]


@pytest.fixture(scope="module")
def reference_curve(tmp_path_factory):
    return loss_curve(tmp_path_factory.mktemp("reference"), "reference")


@pytest.mark.parametrize("backend", ["chunked", "triton"])
def test_backend_loss_curve_matches_reference(backend, reference_curve, tmp_path):
    reason = BACKENDS[backend].unavailable_reason(torch.device("cpu"), torch.float32)
    if reason is not None:
        pytest.skip(f"{backend} is not usable on CPU here: {reason}")
    curve = loss_curve(tmp_path, backend)
    assert len(curve) == len(reference_curve) == STEPS
    assert len(set(curve)) > 1  # the weights moved: later losses differ from the first
    torch.testing.assert_close(
        torch.tensor(curve), torch.tensor(reference_curve), rtol=1e-4, atol=1e-5
    )
