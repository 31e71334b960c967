"""Run logs: JSON lines in <out>/log.jsonl, a one-line progress bar on stderr, TensorBoard scalars
with --tensorboard.

Every record is one JSON object with a "kind" ("step", "epoch", "knn", "run") and plain numbers, so
`pandas.read_json(path, lines=True)` or `jq` reads a run. Only rank 0 builds a RunLogger that writes;
the others get `enabled=False` and write nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Any


def format_duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressBar:
    """`epoch 2/6 [#######.......] 12/50 loss 5.1234 lr 0.300 1234 img/s ETA 1:02` on one line."""

    def __init__(
        self, total_steps: int, epochs: int, stream: IO[str] | None = None, width: int = 20
    ):
        self.total_steps, self.epochs, self.width = total_steps, epochs, width
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty()

    def update(
        self,
        *,
        epoch: int,
        step: int,
        steps_per_epoch: int,
        loss: float,
        lr: float,
        images_per_s: float,
        eta_s: float,
    ) -> None:
        done = step - epoch * steps_per_epoch
        filled = round(self.width * done / max(steps_per_epoch, 1))
        bar = "#" * filled + "." * (self.width - filled)
        line = (
            f"epoch {epoch + 1}/{self.epochs} [{bar}] {done}/{steps_per_epoch} loss {loss:.4f} "
            f"lr {lr:.4g} {images_per_s:.0f} img/s ETA {format_duration(eta_s)}"
        )
        # On a terminal the line redraws in place; in a log file each update is its own line.
        self.stream.write(("\r" + line + "\x1b[K") if self.interactive else line + "\n")
        self.stream.flush()

    def end_line(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


class RunLogger:
    """Appends JSON records to <out>/log.jsonl, and with tensorboard=True every numeric value as a
    TensorBoard scalar `<kind>/<name>` (step/loss, step/lr, step/images_per_s, epoch/knn_top1, ...)
    in <out>/tensorboard."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = False):
        self.enabled = enabled
        self.path = Path(out_dir) / "log.jsonl"
        self.tensorboard = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:  # --tensorboard; the config checked that tensorboard imports
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(self.path.parent / "tensorboard"))

    def log(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for name, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.tensorboard.add_scalar(f"{kind}/{name}", value, step)

    def print(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
