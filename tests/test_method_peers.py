"""`fastclr bench methods` (fastclr/bench/method_peers.py): fastclr and lightly side by side.

lightly is an optional peer (the `bench` extra; `pip install --no-deps lightly` is enough for the
parts used here): without it these tests skip.
"""

import json
import random
import statistics
import subprocess
import sys

import pytest
import torch
from torch import nn

pytest.importorskip(
    "lightly", reason="lightly is not installed: pip install --no-deps lightly (the bench extra)"
)

from fastclr.bench import method_peers, method_peers_report  # noqa: E402
from fastclr.bench.method_peers_lightly import build_lightly_model  # noqa: E402
from fastclr.bench.method_peers_settings import METHODS, PeerSettings, parse_seeds  # noqa: E402
from fastclr.cli.main import build_parser  # noqa: E402
from fastclr.errors import UsageError  # noqa: E402

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
    (a subprocess), lightly in process, the random-init baseline; JSON and Markdown written. One
    seed (a real run is ~25 s); the seeds loop is test_run_all_interleaves_seeds's."""
    settings = PeerSettings(
        methods=("simclr",), data="synthetic:8", batch_size=8, epochs=1, seeds=(3,), workers=0,
        knn_max_images=8,
    )  # fmt: skip
    path = method_peers.run_all(settings, tmp_path / "results", echo=lambda _: None)
    payload = json.loads(path.read_text())
    assert payload["schema"] == method_peers.SCHEMA
    assert payload["env"]["fastclr_side"]["path"] == settings.fastclr_path
    rows = {row["implementation"]: row for row in payload["results"]}
    assert set(rows) == {"fastclr", "lightly", "random-init"}
    assert {row["seed"] for row in rows.values()} == {3}
    assert "--seed 3" in " ".join(rows["fastclr"]["command"])
    for name in ("fastclr", "lightly"):
        row = rows[name]
        assert row["status"] == "measured", row
        assert row["steps"] == 1 and row["epochs"] == 1 and row["batch"] == 8
        assert 0 <= row["knn_top1"] <= 100 and row["images_per_s"] > 0
    assert rows["lightly"]["settings"]["optimizer"] == "lars"
    # the same seed's random-init encoder is the one fastclr's trainer starts from
    assert rows["random-init"]["knn_top1"] == pytest.approx(rows["fastclr"]["knn_init"])
    table = path.with_suffix(".md").read_text()
    assert "1 epochs, 1 seeds (3)" in table
    assert (
        f"| simclr | lightly | {method_peers_report.cell(rows['lightly']['knn_top1'])} |" in table
    )  # by seed


def test_methods_missing_from_fastclr_are_pending(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(method_peers, "fastclr_methods", lambda s: {"simclr"})
    settings = PeerSettings(methods=("swav",), data="synthetic:8", batch_size=8, seeds=(0, 5))
    path = method_peers.run_all(settings, tmp_path, echo=lambda _: None)
    rows = json.loads(path.read_text())["results"]
    assert [(r["implementation"], r["seed"], r["status"]) for r in rows] == [
        ("fastclr", 0, "pending"),
        ("lightly", 0, "pending"),
        ("fastclr", 5, "pending"),
        ("lightly", 5, "pending"),
    ]
    assert "no --method swav" in rows[0]["note"]
    table = path.with_suffix(".md").read_text()
    assert "| swav | fastclr | pending | pending |" in table
    assert table.count("no --method swav yet\n") == 1  # one note for both seeds


def test_cli_names_an_unknown_method() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fastclr.cli.main", "bench", "methods", "--methods", "simclr,mocov9"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--methods simclr,mocov9: choose from simclr,moco,byol,simsiam,swav" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("text", ["", "a,b", "0,,1", "-1", "1.5", "0, 0"])
def test_seeds_are_parsed_and_checked(text: str) -> None:
    with pytest.raises(UsageError, match="--seeds"):
        PeerSettings(seeds=parse_seeds(text))


def test_seeds_parse_and_alias() -> None:
    assert parse_seeds("0,1,2") == (0, 1, 2)
    assert parse_seeds(" 7, 3") == (7, 3)  # order kept: runs go in this order
    for flag in ("--seeds", "--seed"):  # --seed N: the one-seed spelling of before
        args = build_parser().parse_args(["bench", "methods", flag, "4"])
        assert parse_seeds(args.seeds) == (4,)
    args = build_parser().parse_args(["bench", "methods"])
    assert parse_seeds(args.seeds) == PeerSettings().seeds == (0, 1, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--seeds '': give comma-separated non-negative integers, e.g. --seeds 0,1,2"),
        ("a,b", "--seeds 'a,b': give comma-separated non-negative integers"),
        ("2,2", "--seeds 2,2: give each seed once"),
    ],
)
def test_cli_names_bad_seeds(text: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fastclr.cli.main", "bench", "methods", "--seeds", text],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()  # one line: the argument and the fix
    assert line.startswith(f"fastclr bench: error: {message}")
    assert "Traceback" not in done.stderr


def test_run_all_interleaves_seeds(tmp_path, monkeypatch) -> None:
    """Per method, per seed: fastclr's run, then the seed's random-init baseline (measured once
    per seed, at the first config of that seed), then lightly's run with that run's config."""
    calls = []

    def fake_fastclr(method, s, seed, out):
        calls.append((method, "fastclr", seed))
        row = {"status": "measured", "steps": 1, "knn_top1": 80.0 + seed, "images_per_s": 9.0}
        return row, {"seed": seed, "optimizer": "sgd"}

    def fake_baseline(s, config):
        calls.append(("-", "random-init", config["seed"]))
        return 70.0 + config["seed"]

    def fake_lightly(method, s, config):
        calls.append((method, "lightly", config["seed"]))
        return {"status": "measured", "knn_top1": 60.0 + config["seed"], "images_per_s": 3.0}

    monkeypatch.setattr(method_peers, "fastclr_methods", lambda s: {"simclr", "byol"})
    monkeypatch.setattr(method_peers, "run_fastclr", fake_fastclr)
    monkeypatch.setattr(method_peers, "random_init_knn", fake_baseline)
    monkeypatch.setattr(method_peers, "run_lightly", fake_lightly)
    settings = PeerSettings(
        methods=("byol", "simclr"), data="synthetic:8", batch_size=8, seeds=(4, 1)
    )
    path = method_peers.run_all(settings, tmp_path, echo=lambda _: None)
    payload = json.loads(path.read_text())
    expected = [
        ("byol", "fastclr", 4), ("-", "random-init", 4), ("byol", "lightly", 4),
        ("byol", "fastclr", 1), ("-", "random-init", 1), ("byol", "lightly", 1),
        ("simclr", "fastclr", 4), ("simclr", "lightly", 4),
        ("simclr", "fastclr", 1), ("simclr", "lightly", 1),
    ]  # fmt: skip
    assert calls == expected
    rows = payload["results"]
    assert [(r["method"], r["implementation"], r["seed"]) for r in rows] == expected
    assert payload["schema"] == "fastclr.method_peers/2"
    assert payload["settings"]["seeds"] == [4, 1] and "seed" not in payload["settings"]
    assert all(r["knn_top1"] % 10 == r["seed"] for r in rows)  # each row has its own seed's run
    table = path.with_suffix(".md").read_text()
    assert "| byol | lightly | 64.00 | 61.00 |" in table  # by seed, in the order run
    assert "| byol | lightly | 2 | 62.50 | 61.00–64.00 | -10.00 (-10.00 to -10.00) |" in table


def rows_of(knn: dict[tuple[str, str], list[float | None]], seeds: list[int]) -> list[dict]:
    """Result rows of schema /2 with these kNN per (method, implementation), one per seed;
    None: a failed run. images/s = 10 x kNN, seconds = kNN / 10 (so medians are checkable)."""
    rows = []
    for (method, implementation), values in knn.items():
        for seed, value in zip(seeds, values, strict=True):
            rows.append(
                {
                    "method": method, "implementation": implementation, "seed": seed,
                    "status": "failed" if value is None else "measured", "knn_top1": value,
                    "images_per_s": None if value is None or implementation == "random-init"
                    else 10 * value,
                    "train_seconds": None if value is None or implementation == "random-init"
                    else value / 10,
                }
            )  # fmt: skip
    random.shuffle(rows)  # the statistics do not depend on the order rows were written in
    return rows


def test_summary_pairs_each_run_with_its_own_seeds_baseline() -> None:
    seeds = [0, 1, 2]
    rows = rows_of(
        {
            ("-", "random-init"): [70.0, 75.0, 80.0],
            ("simclr", "fastclr"): [80.0, 78.0, 90.0],
            ("simclr", "lightly"): [85.0, 76.0, None],  # seed 2 failed
        },
        seeds,
    )
    records = method_peers_report.summarize(rows)
    assert records[0]["implementation"] == "random-init"  # the baseline leads the table
    summary = {s["implementation"]: s for s in records}
    fastclr, lightly = summary["fastclr"], summary["lightly"]
    assert sorted(fastclr["seeds"]) == seeds and sorted(lightly["seeds"]) == [0, 1]
    assert fastclr["knn"]["mean"] == pytest.approx(248 / 3)
    assert (fastclr["knn"]["min"], fastclr["knn"]["max"]) == (78.0, 90.0)
    # paired: 80-70, 78-75, 90-80; unpaired (mean minus the mean baseline) would agree on the
    # mean here but not on min/max, and not for lightly, whose seed 2 is missing
    assert fastclr["gain"]["mean"] == pytest.approx(23 / 3)
    assert (fastclr["gain"]["min"], fastclr["gain"]["max"]) == (3.0, 10.0)
    assert lightly["gain"]["mean"] == pytest.approx(8.0)  # (15 + 1) / 2, not 80.5 - 75
    assert (lightly["gain"]["min"], lightly["gain"]["max"]) == (1.0, 15.0)
    assert fastclr["images_per_s"]["median"] == pytest.approx(800.0)
    assert fastclr["train_seconds"]["median"] == pytest.approx(8.0)
    assert summary["random-init"]["gain"] is None
    (pair,) = method_peers_report.fastclr_minus_lightly(rows)
    assert sorted(pair["seeds"]) == [0, 1]  # only seeds where both sides were measured
    assert pair["knn_difference"]["mean"] == pytest.approx(-1.5)  # (-5 + 2) / 2
    assert (pair["knn_difference"]["min"], pair["knn_difference"]["max"]) == (-5.0, 2.0)
    assert pair["speed_ratio"]["median"] == pytest.approx((80 / 85 + 78 / 76) / 2)


@pytest.mark.parametrize("n_seeds", [1, 2, 5])
def test_summary_statistics_on_random_knn(n_seeds: int) -> None:
    """Fresh random kNN on every run: mean, min, max and paired gain against a direct computation."""
    seeds = random.sample(range(100), n_seeds)
    base = [random.uniform(50, 90) for _ in seeds]
    knn = [random.uniform(50, 100) for _ in seeds]
    rows = rows_of({("-", "random-init"): base, ("moco", "lightly"): knn}, seeds)
    summary = {s["implementation"]: s for s in method_peers_report.summarize(rows)}
    got = summary["lightly"]
    assert got["knn"]["mean"] == pytest.approx(sum(knn) / n_seeds)
    assert (got["knn"]["min"], got["knn"]["max"]) == (min(knn), max(knn))
    gains = [k - b for k, b in zip(knn, base, strict=True)]
    assert got["gain"]["mean"] == pytest.approx(sum(gains) / n_seeds)
    assert got["gain"]["min"] == pytest.approx(min(gains))
    assert got["gain"]["max"] == pytest.approx(max(gains))
    assert got["images_per_s"]["median"] == pytest.approx(10 * statistics.median(knn))
    assert summary["random-init"]["knn"]["mean"] == pytest.approx(sum(base) / n_seeds)


def test_markdown_of_a_multi_seed_result() -> None:
    seeds = [0, 1, 2]
    rows = rows_of(
        {
            ("-", "random-init"): [70.0, 75.0, 80.0],
            ("simclr", "fastclr"): [80.0, 78.0, 90.0],
            ("simclr", "lightly"): [85.0, 75.0, None],
        },
        seeds,
    )
    for row in rows:
        if row["implementation"] == "lightly":
            row["settings"] = {"optimizer": "lars", "lr": 4.0}
        if row["status"] == "failed":
            row["note"] = "RuntimeError: boom"
    env = {
        "timestamp": "2026-11-29T18:24:04+00:00", "cpu": "AMD EPYC", "device_slug": "cpu-amd-epyc",
        "load_average": [1.0, 1.0, 1.0], "torch": "2.14.1", "lightly": "1.6.0", "python": "3.11.7",
        "fastclr_side": {"path": "/w", "branch": "main", "commit": "abc1234", "dirty": False},
        "harness_side": {"path": "/w", "branch": "main", "commit": "abc1234", "dirty": True},
    }  # fmt: skip
    settings = {
        "data": "digits", "image_size": 8, "batch_size": 128, "epochs": 3, "seeds": seeds,
        "threads": 2, "workers": 2,
    }  # fmt: skip
    text = method_peers_report.render(env, settings, rows)
    assert "3 epochs, 3 seeds (0, 1, 2)" in text
    assert "## Over 3 seeds" in text
    lines = text.splitlines()
    summary = [line for line in lines if line.startswith("| ") and "min–max" not in line]
    assert "| - | random-init | 3 | 75.00 | 70.00–80.00 | - | - | - |" in summary
    assert (
        "| simclr | fastclr | 3 | 82.67 | 78.00–90.00 | +7.67 (+3.00 to +10.00) | 800.0 | 8.0 |"
        in summary
    )
    assert (
        "| simclr | lightly | 2 of 3 | 80.00 | 75.00–85.00 | +7.50 (+0.00 to +15.00) | 800.0 | 8.0 |"
        in summary
    )
    assert "| simclr | 2 | -1.00 (-5.00 to +3.00) | 0.99x (0.94x to 1.04x) |" in summary
    assert "| method | implementation | seed 0 | seed 1 | seed 2 |" in lines
    assert "| - | random-init | 70.00 | 75.00 | 80.00 |" in lines
    assert "| simclr | fastclr | 80.00 | 78.00 | 90.00 |" in lines
    assert "| simclr | lightly | 85.00 | 75.00 | failed |" in lines
    assert "- simclr / lightly: optimizer lars, lr 4.0" in lines  # once: all seeds share it
    assert "- simclr / lightly (seed 2): RuntimeError: boom" in lines
    assert "(main @ abc1234 + uncommitted changes)" in text
