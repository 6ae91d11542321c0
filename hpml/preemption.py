"""Preemption: SLURM's warning signal -> every rank stops at the same step -> requeue.

SLURM sends SIGUSR1 (`--signal=USR1@<seconds>`) or SIGTERM before killing a job, possibly to
some ranks only. The handler only sets a flag; after every step the ranks OR their flags with
one tiny allreduce, so all of them stop after the same step, whichever rank was signalled.
"""

from __future__ import annotations

import logging
import signal

import tensorflow as tf

from hpml import distributed

log = logging.getLogger(__name__)
REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"; jobs/train.sbatch requeues on it
# Also written by rank 0 next to the checkpoint: srun may report another exit code when it
# tears the step down after the first rank has left, so the job script checks this too.
MARKER = "PREEMPTED"
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preemption(tf.keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.signalled = False
        self.requested = False  # agreed by all ranks
        self.steps_done = 0  # steps completed in the current fit() call

    def install(self) -> Preemption:
        for sig in SIGNALS:
            signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        self.signalled = True
        log.warning("received %s: will checkpoint and stop after the current step", signal.Signals(signum).name)

    def on_train_begin(self, logs=None) -> None:
        self.steps_done = 0

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.steps_done = batch + 1
        if distributed.any_rank(self.signalled, "preemption"):
            self.requested = True
            self.model.stop_training = True
