"""StepMeter: time counts only while steps run, a log record per logged step, a bar line each."""

import io
import json
import time

from fastclr.train.logging import RunLogger
from fastclr.train.meter import StepMeter


def test_meter_counts_steps_not_pauses(tmp_path):
    logger = RunLogger(tmp_path)
    meter = StepMeter(logger, batch_size=4, steps_per_epoch=3, epochs=1, stop_at=3, show_bar=True)
    meter.bar.stream = io.StringIO()
    meter.bar.interactive = False
    meter.start_epoch()
    meter.step(step=1, epoch=0, lr=0.1, loss=None)  # not logged: no record, no bar line
    with meter.paused():
        time.sleep(1.0)  # a checkpoint: not training time
    meter.step(step=2, epoch=0, lr=0.1, loss=2.5)
    meter.step(step=3, epoch=0, lr=0.1, loss=2.25)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in records] == [(2, 2.5), (3, 2.25)]
    assert meter.train_steps == 3 and meter.loss == 2.25
    assert meter.train_seconds < 1.0  # the pause was left out
    assert meter.mean_images_per_s == 3 * 4 / meter.train_seconds
    assert meter.bar.stream.getvalue().count("\n") == 2
