"""StepMeter: training time, images/s, ETA, the step log records and the progress bar, in one place.

Time is counted only while steps run: between `start_epoch` and the end of the epoch, less anything
inside `paused()` (checkpoints). The loss is passed in only on logged steps, where the caller has
already synced it to the host; other steps redraw a terminal's bar with the last synced values.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from fastclr.train.logging import ProgressBar, RunLogger


class StepMeter:
    """Throughput and progress of one run (rank 0 draws the bar; every rank may keep time)."""

    def __init__(
        self,
        logger: RunLogger,
        *,
        batch_size: int,
        steps_per_epoch: int,
        epochs: int,
        stop_at: int,
        show_bar: bool,
    ) -> None:
        self.logger, self.batch_size = logger, batch_size
        self.steps_per_epoch, self.stop_at = steps_per_epoch, stop_at
        self.bar = ProgressBar(epochs * steps_per_epoch, epochs) if show_bar else None
        self.train_seconds, self.train_steps = 0.0, 0  # totals over logged intervals
        self.loss, self.images_per_s = float("nan"), 0.0  # as of the last logged step
        self._mark, self._steps_since = time.perf_counter(), 0

    def start_epoch(self) -> None:
        """Start the clock for the steps to come (loader setup and epoch-end work not counted)."""
        self._mark, self._steps_since = time.perf_counter(), 0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Work inside (a checkpoint) is not training time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._mark += time.perf_counter() - start

    @property
    def mean_images_per_s(self) -> float | None:
        """Images per second over every logged interval of the run, None before the first."""
        if not self.train_steps:
            return None
        return self.train_steps * self.batch_size / self.train_seconds

    def step(self, *, step: int, epoch: int, lr: float, loss: float | None) -> None:
        """After each optimizer step. loss: the synced loss on a step to log, else None."""
        self._steps_since += 1
        if loss is not None:
            now = time.perf_counter()
            elapsed = now - self._mark
            self.train_seconds += elapsed
            self.train_steps += self._steps_since
            self.images_per_s = self._steps_since * self.batch_size / elapsed
            self.loss = loss
            self.logger.log(
                "step", step, epoch=epoch, loss=loss, lr=lr,
                images_per_s=round(self.images_per_s, 2),
            )  # fmt: skip
            self._mark, self._steps_since = now, 0
        elif self.bar is None or not self.bar.interactive or not self.train_steps:
            return  # a log file gets one bar line per logged step; nothing to redraw yet
        if self.bar is not None:
            self.bar.update(
                epoch=epoch,
                step=step,
                steps_per_epoch=self.steps_per_epoch,
                loss=self.loss,
                lr=lr,
                images_per_s=self.images_per_s,
                eta_s=(self.stop_at - step) * self.train_seconds / self.train_steps,
            )

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.end_line()
