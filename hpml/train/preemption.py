"""Preemption: SLURM's warning signal -> every rank stops at the same step -> requeue.

SLURM sends SIGUSR1 (`--signal=B:USR1@<seconds>`, forwarded by the job script) or SIGTERM
(scancel, time limit) before killing a job, possibly to some ranks only. The handler only
records the signal; the ranks OR their flags with one tiny allreduce at steps they all know in
advance (`CheckSchedule`), so all of them stop after the same step, whichever rank was
signalled, and only where an optimizer update is complete. A check every step would cost a
blocking collective per step (0.9-2.9 ms measured on 2 local ranks: up to ~10 % of a 20 ms GPU
step); the schedule times the first steps and one check, then agrees on checking every K steps
so that the checks cost under CHECK_BUDGET of the time, and at least every MAX_CHECK_INTERVAL_S
(SLURM's warning comes minutes before the kill). The train loop also checks at every epoch end.

The handlers are installed by `install_handlers()` before anything slow (TensorFlow's import,
staging, the model build): a signal arriving then is remembered, not fatal. This module
therefore imports neither TensorFlow nor Horovod at the top; the Keras callback `Preemption`
is built on first use.

The marker `RUN/PREEMPTED` is the rank's word to the job script: its first line names the job
(or array task) and the restart count of the run that wrote it, so the script requeues only a
run that really checkpointed for this job, never on a marker left by an earlier run.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import time
from pathlib import Path

from hpml.core.jobid import job_identity
from hpml.core.runfiles import RunDir
from hpml.parallel import distributed

log = logging.getLogger(__name__)
REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"; the job script requeues on the marker below
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
_received: list[str] = []  # names of the signals received, in order
CHECK_BUDGET = 0.005  # the stop checks may cost at most this fraction of the training time
MAX_CHECK_INTERVAL_S = 30.0  # ...and come at least this often, however cheap steps are
CALIBRATION_STEPS = 10  # steps timed before K is chosen


def _handler(signum, frame) -> None:
    name = signal.Signals(signum).name
    _received.append(name)
    log.warning("received %s: will checkpoint and stop after the current step", name)


def install_handlers() -> None:
    """Catch SIGUSR1/SIGTERM from now on (idempotent). Call it first thing in `hpml train`."""
    for sig in SIGNALS:
        if signal.getsignal(sig) is not _handler:
            signal.signal(sig, _handler)


def received() -> str | None:
    """The first preemption signal received by this process, or None."""
    return _received[0] if _received else None


def write_marker(run_dir: Path, epoch: int, step: int) -> Path:
    """Rank 0, after the checkpoint: `RUN/PREEMPTED`, first line `job=<id> restart=<n>`."""
    path = RunDir(run_dir).marker
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{job_identity()}\nsignal={received() or 'none'} epoch={epoch} step={step}\n")
    tmp.replace(path)
    return path


def clear_marker(run_dir: Path) -> None:
    RunDir(run_dir).marker.unlink(missing_ok=True)


def check_every(step_s: float, check_s: float, unit: int) -> int:
    """K: steps between stop checks, a multiple of `unit` (accumulated micro-batches per update)."""
    k = math.ceil(check_s / (CHECK_BUDGET * step_s)) if step_s > 0 else unit
    cap = int(MAX_CHECK_INTERVAL_S / step_s) if step_s > 0 else k
    k = max(1, min(k, cap))
    return math.ceil(k / unit) * unit


class CheckSchedule:
    """At which of this process's steps the ranks agree on stopping.

    It depends only on the count of steps since start-up (the same on every rank: they resume
    from one broadcast state) and on K, agreed with an allreduce-max, so every rank calls the
    collective at the same step. Stages: a check after the first update (a signal that came during
    start-up stops the job at once); a check after CALIBRATION_STEPS more, timed with the steps
    before it; one update later an allreduce-max of every rank's proposed K; then every K steps.
    The clock runs only inside `fit` (validation between two fits is not step time).
    """

    def __init__(self, unit: int = 1, every: int | None = None) -> None:
        self.unit = unit
        self.window = math.ceil(CALIBRATION_STEPS / unit) * unit
        self.every = every  # K: given (train.stop_check_steps), or agreed after calibration
        self.seen = 0  # steps since start-up
        self.stage, self.next = ("steady", every) if every else ("first", unit)
        self._t0 = self._timed = self._step_s = self._check_s = 0.0  # seconds
        self.proposal = unit

    def fit_begins(self) -> None:
        self._t0 = time.perf_counter()

    def fit_ends(self) -> None:
        if self.stage == "measure":
            self._timed += time.perf_counter() - self._t0

    def step(self) -> bool:
        """Count a step; True when this step is a check."""
        self.seen += 1
        return self.seen == self.next

    def check(self, signalled: bool) -> bool:
        """The collective at a check step; True when any rank was signalled."""
        if self.stage == "agree":
            flag, k = distributed.allreduce_max([int(signalled), self.proposal], "preemption_agree")
            self.every, self.stage = int(k), "steady"
            self.next = self.seen + self.every
            log.info(
                "preemption checks agreed: every %d steps from step %d (this rank: step %.1f ms, check %.2f ms)",
                self.every,
                self.seen,
                self._step_s * 1e3,
                self._check_s * 1e3,
            )
            return bool(flag)
        if self.stage == "measure":
            self._step_s = (self._timed + time.perf_counter() - self._t0) / self.window
            start = time.perf_counter()
            stop = distributed.any_rank(signalled, "preemption")
            self._check_s = time.perf_counter() - start
            self.proposal = check_every(self._step_s, self._check_s, self.unit)
            self.stage, self.next = "agree", self.seen + self.unit
            return stop
        stop = distributed.any_rank(signalled, "preemption")
        if self.stage == "first":
            self.stage, self.next, self._t0, self._timed = "measure", self.seen + self.window, time.perf_counter(), 0.0
        else:
            self.next = self.seen + self.every
        return stop


@functools.cache
def _callback_class() -> type:
    import tensorflow as tf

    class Preemption(tf.keras.callbacks.Callback):
        """Stops `fit` on every rank at the first scheduled check after any rank got a signal."""

        def __init__(self, accumulate_steps: int = 1, every: int | None = None) -> None:
            super().__init__()
            self._supports_tf_logs = True  # reads no metric: no host sync per step
            self.schedule = CheckSchedule(accumulate_steps, every)
            self.requested = False  # agreed by all ranks
            self.steps_done = 0  # steps completed in the current fit() call

        @property
        def signalled(self) -> bool:
            return received() is not None

        def at_epoch_end(self) -> bool:
            """The check between two fits (the collective on every rank): stop here?"""
            self.requested = self.requested or distributed.any_rank(self.signalled, "preemption_epoch")
            return self.requested

        def on_train_begin(self, logs=None) -> None:
            self.steps_done = 0
            self.schedule.fit_begins()

        def on_train_end(self, logs=None) -> None:
            self.schedule.fit_ends()

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.steps_done = batch + 1
            if self.schedule.step() and self.schedule.check(self.signalled):
                self.requested = True
                self.model.stop_training = True

    return Preemption


def __getattr__(name: str):
    if name == "Preemption":  # `from hpml.train.preemption import Preemption` builds the Keras class lazily
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
