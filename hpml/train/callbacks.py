"""The Keras callbacks of `hpml train`'s loop, built in one place so `hpml bench loop` times
exactly what training runs.

None of them reads a metric per step (`_supports_tf_logs`): Keras then hands the step's logs
over as tensors and never waits for the device between steps. Horovod's MetricAverageCallback
acts at epoch ends only, and the preemption check is a collective every K steps
(hpml.train.preemption.CheckSchedule), not every step.
"""

from __future__ import annotations

import tensorflow as tf

from hpml.core.failure import at
from hpml.core.logs import Progress
from hpml.core.world import World
from hpml.parallel import distributed
from hpml.train.preemption import Preemption


class Warmup(tf.keras.callbacks.Callback):
    """Linear LR ramp from the single-worker LR to the scaled LR over the first steps."""

    def __init__(self, start_lr: float, target_lr: float, steps: int, first_step: int) -> None:
        super().__init__()
        self._supports_tf_logs = True
        self.start, self.target, self.steps, self.step = start_lr, target_lr, steps, first_step

    def on_train_batch_begin(self, batch, logs=None) -> None:
        if self.step < self.steps:
            frac = (self.step + 1) / self.steps
            self.model.optimizer.learning_rate.assign(self.start + (self.target - self.start) * frac)
        self.step += 1


class StepProgress(tf.keras.callbacks.Callback):
    """Steps within an epoch on rank 0: a bar on a terminal, a line every 30 s in a SLURM log.

    Also the per-step fault-injection point `step` (hpml.core.faults)."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self._supports_tf_logs = True
        self.world, self.view, self.label, self.total = world, None, "", 0

    def start(self, label: str, total: int) -> None:
        self.label, self.total = label, total

    def on_train_begin(self, logs=None) -> None:
        self.view = Progress(self.total, self.label, self.world, unit="step")

    def on_train_batch_begin(self, batch, logs=None) -> None:
        at("step")

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.view.update()

    def on_train_end(self, logs=None) -> None:
        self.view.close()


def training_callbacks(preemption: Preemption, warmup: Warmup, progress: StepProgress, extra=()) -> list:
    """In the order they run: Horovod's metric averaging first, then ours."""
    return [*distributed.keras_callbacks(), warmup, preemption, progress, *extra]
