"""What `fastclr bench methods` runs: its settings and --seeds, checked without importing torch
(the CLI builds its parser from PeerSettings' defaults; fastclr/bench/method_peers.py runs them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import fastclr
from fastclr.errors import UsageError
from fastclr.methods.defaults import METHOD_NAMES as METHODS


@dataclass(frozen=True)
class PeerSettings:
    """What both implementations train with (the rest is each method's fastclr default)."""

    methods: tuple[str, ...] = METHODS
    data: str = "digits"
    image_size: int = 8
    batch_size: int = 128
    epochs: int = 4
    seeds: tuple[int, ...] = (0, 1, 2)
    threads: int = 2
    workers: int = 2
    knn_max_images: int = 10000
    fastclr_path: str = str(Path(fastclr.__file__).resolve().parent.parent)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise UsageError(f"--methods {','.join(self.methods)}: choose from {','.join(METHODS)}")
        for name in ("image_size", "batch_size", "epochs", "threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
        shown = ",".join(str(seed) for seed in self.seeds)
        if not self.seeds or any(not isinstance(x, int) or x < 0 for x in self.seeds):
            raise UsageError(f"--seeds {shown!r}: give non-negative integers, e.g. --seeds 0,1,2")
        if len(set(self.seeds)) != len(self.seeds):
            raise UsageError(
                f"--seeds {shown}: give each seed once (a repeat measures nothing new)"
            )
        if self.batch_size < 2:
            raise UsageError("--batch-size must be >= 2 (contrastive methods need negatives)")
        if not (Path(self.fastclr_path) / "fastclr" / "__init__.py").is_file():
            raise UsageError(
                f"--fastclr-path {self.fastclr_path}: no fastclr package there; pass the root of "
                "a fastclr checkout"
            )


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2), the value of --seeds; UsageError naming the argument otherwise."""
    parts = [part.strip() for part in text.split(",")]
    if not all(re.fullmatch(r"[0-9]+", part) for part in parts):
        raise UsageError(
            f"--seeds {text!r}: give comma-separated non-negative integers, e.g. --seeds 0,1,2"
        )
    return tuple(int(part) for part in parts)
