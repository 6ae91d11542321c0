"""RUN/status.json: where a training run is, written by rank 0 as it trains.

`hpml status` reads it next to SLURM's view of the job. Writing costs no collective and no
extra host sync: a step counter and a clock check per step (the Keras callback keeps the
step's logs as tensors), one small atomic file write per interval and per epoch.

Call sites in hpml/train/loop.py (rank 0 only; other ranks get a no-op writer):
    status = StatusWriter(run_dir, world, state, epochs, steps_per_epoch, global_batch)
    callbacks.append(status.callback())                  # progress every `every` seconds
    status.epoch_end(row, state)                         # after the epoch's history row
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from hpml.core.jobid import job_identity
from hpml.core.runfiles import RunDir

EVERY_S = 30.0


class StatusWriter:
    def __init__(
        self, run_dir: Path, world, state, epochs: int, steps_per_epoch: int, global_batch: int, every: float = EVERY_S
    ) -> None:
        self.active = world.is_root
        self.path = RunDir(run_dir).status
        self.state, self.epochs, self.steps, self.batch = state, epochs, steps_per_epoch, global_batch
        self.every = every
        self.started = time.time()
        self.fit_steps = 0  # steps done in the current fit() call (state is updated after it)
        self.rate: float | None = None  # steps/s over the last interval
        self._mark = (time.monotonic(), self._global_step())
        self.last: dict[str, float] = {}
        self.write("done" if state.epoch >= epochs else "starting")

    def _global_step(self) -> int:
        return self.state.global_step + self.fit_steps

    def step(self) -> None:
        self.fit_steps += 1
        now = time.monotonic()
        if now - self._mark[0] >= self.every:
            self._measure(now)
            self.write("training")

    def fit_done(self) -> None:
        self._measure(time.monotonic())
        self.fit_steps = 0  # the train loop now adds them to state

    def _measure(self, now: float) -> None:
        then, step = self._mark
        done = self._global_step() - step
        if done > 0 and now > then:
            self.rate = done / (now - then)
        self._mark = (now, self._global_step())

    def epoch_end(self, row: dict[str, Any], state) -> None:
        self.state = state  # the train loop replaces its state object each epoch
        self.last = {k: float(v) for k, v in row.items() if isinstance(v, int | float)}
        self.write("training" if self.state.epoch < self.epochs else "done")

    def write(self, phase: str) -> None:
        if not self.active:
            return
        total = self.epochs * self.steps
        step = self._global_step()
        remaining = max(total - step, 0)
        doc = {
            "phase": phase,
            "updated": time.time(),
            "started": self.started,
            "job": job_identity(),
            "host": socket.gethostname(),
            "epoch": self.state.epoch,
            "epochs": self.epochs,
            "step_in_epoch": self.state.step_in_epoch + self.fit_steps,
            "steps_per_epoch": self.steps,
            "global_step": step,
            "steps_per_s": self.rate,
            "images_per_s": self.rate * self.batch if self.rate else None,
            "eta_s": remaining / self.rate if self.rate else None,  # training steps only, not validation
            "last": self.last,
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(self.path)

    def callback(self):
        """A Keras callback feeding `step()`; built here so this module loads without TensorFlow."""
        import tensorflow as tf

        writer = self

        class StatusCallback(tf.keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self._supports_tf_logs = True  # keep the step's logs on the device: no sync for us

            def on_train_batch_end(self, batch, logs=None) -> None:
                writer.step()

            def on_train_end(self, logs=None) -> None:
                writer.fit_done()

        return StatusCallback()
