"""`fastclr bench methods` (fastclr/bench/method_peers.py): fastclr and lightly side by side.

lightly is an optional peer (the `bench` extra; `pip install --no-deps lightly` is enough for the
parts used here): without it these tests skip.
"""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

pytest.importorskip(
    "lightly", reason="lightly is not installed: pip install --no-deps lightly (the bench extra)"
)

from fastclr.bench import method_peers  # noqa: E402
from fastclr.bench.method_peers_lightly import METHODS, build_lightly_model  # noqa: E402

TINY = {
    "proj_dim": 8, "proj_hidden": 16, "proj_layers": 2, "pred_hidden": 8, "temperature": 0.3,
    "target_momentum": 0.9, "prototypes": 5, "freeze_prototypes_steps": 1,
}  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_lightly_model_trains_its_online_encoder(method: str) -> None:
    """Two steps of each lightly model on odd-sized random views: a finite loss, gradients in the
    online backbone only, momentum copies moved by the EMA, the queue filled with keys."""
    torch.seed()  # fresh random weights and views on every run
    backbone = nn.Sequential(  # a small CNN: the heads, losses and momentum paths are under test
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )  # fmt: skip
    settings = {**TINY, "queue_size": 16 if method == "moco" else 0}
    model = build_lightly_model(
        method, backbone, feature_dim=6, settings=settings, steps_per_epoch=1
    )
    momentum_params = [p for n, p in model.named_parameters() if "momentum" in n]
    before = [p.detach().clone() for p in momentum_params]
    for step in range(2):
        model.zero_grad(set_to_none=True)
        x0, x1 = torch.randn(2, 3, 3, 5, 5).unbind(0)
        loss = model.training_loss(x0, x1, step, 2)
        assert loss.numel() == 1 and torch.isfinite(loss).all()  # lightly SwaVLoss: shape [1]
        loss.backward()
        with torch.no_grad():  # a step of plain SGD so the momentum copies have something to follow
            for p in model.parameters():
                if p.grad is not None:
                    p.sub_(0.1 * p.grad)
    assert all(p.grad is None for p in momentum_params)
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    if momentum_params:
        moved = [
            not torch.equal(a, b.detach()) for a, b in zip(before, momentum_params, strict=True)
        ]
        assert any(moved)
    if method == "moco":
        bank = model.criterion.memory_bank  # lightly's MemoryBankModule: [K, D]
        assert bank.bank.shape == (16, TINY["proj_dim"])
        assert int(bank.bank_ptr) == 2 * 2 * 3  # 2 steps x both directions x 3 keys enqueued


def test_methods_bench_runs_both_implementations(tmp_path) -> None:
    """The harness on a handful of images, one step each side: fastclr through `fastclr train`
    (a subprocess), lightly in process, the random-init baseline; JSON and Markdown written."""
    settings = method_peers.PeerSettings(
        methods=("simclr",), data="synthetic:8", batch_size=8, epochs=1, workers=0,
        knn_max_images=8,
    )  # fmt: skip
    path = method_peers.run_all(settings, tmp_path / "results", echo=lambda _: None)
    payload = json.loads(path.read_text())
    assert payload["schema"] == method_peers.SCHEMA
    assert payload["env"]["fastclr_side"]["path"] == settings.fastclr_path
    rows = {row["implementation"]: row for row in payload["results"]}
    assert set(rows) == {"fastclr", "lightly", "random-init"}
    for name in ("fastclr", "lightly"):
        row = rows[name]
        assert row["status"] == "measured", row
        assert row["steps"] == 1 and row["epochs"] == 1 and row["batch"] == 8
        assert 0 <= row["knn_top1"] <= 100 and row["images_per_s"] > 0
    assert rows["lightly"]["settings"]["optimizer"] == "lars"
    table = path.with_suffix(".md").read_text()
    assert "| method | implementation | epochs | batch | kNN top-1 | images/s | seconds |" in table
    assert "| simclr | lightly | 1 | 8 |" in table


def test_methods_missing_from_fastclr_are_pending(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(method_peers, "fastclr_methods", lambda s: {"simclr"})
    settings = method_peers.PeerSettings(methods=("swav",), data="synthetic:8", batch_size=8)
    path = method_peers.run_all(settings, tmp_path, echo=lambda _: None)
    rows = json.loads(path.read_text())["results"]
    assert [(r["implementation"], r["status"]) for r in rows] == [
        ("fastclr", "pending"),
        ("lightly", "pending"),
    ]
    assert "no --method swav" in rows[0]["note"]
    assert "| swav | fastclr | 4 | 8 | pending | - | - |" in path.with_suffix(".md").read_text()


def test_cli_names_an_unknown_method() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fastclr.cli.main", "bench", "methods", "--methods", "simclr,mocov9"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--methods simclr,mocov9: choose from simclr,moco,byol,simsiam,swav" in done.stderr
    assert "Traceback" not in done.stderr
