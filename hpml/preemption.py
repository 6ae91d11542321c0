"""Preemption: SLURM's warning signal -> every rank stops at the same step -> requeue.

SLURM sends SIGUSR1 (`--signal=B:USR1@<seconds>`, forwarded by the job script) or SIGTERM
(scancel, time limit) before killing a job, possibly to some ranks only. The handler only
records the signal; after every step the ranks OR their flags with one tiny allreduce, so all
of them stop after the same step, whichever rank was signalled.

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
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)
REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"; the job script requeues on the marker below
MARKER = "PREEMPTED"
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
_received: list[str] = []  # names of the signals received, in order


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


def job_identity(environ: dict[str, str] | None = None) -> str:
    """`job=<id> restart=<n>`: the same words the job script builds (jobs/hpml-env.sh).

    An array task is named `<array job id>_<task id>`, as scontrol and scancel need it: a bare
    array job id would name every task of the array.
    """
    env = os.environ if environ is None else environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    else:
        job = env.get("SLURM_JOB_ID") or "none"
    return f"job={job} restart={env.get('SLURM_RESTART_COUNT') or 0}"


def write_marker(run_dir: Path, epoch: int, step: int) -> Path:
    """Rank 0, after the checkpoint: `RUN/PREEMPTED`, first line `job=<id> restart=<n>`."""
    path = Path(run_dir) / MARKER
    tmp = path.with_name(f".{MARKER}.tmp")
    tmp.write_text(f"{job_identity()}\nsignal={received() or 'none'} epoch={epoch} step={step}\n")
    tmp.replace(path)
    return path


def clear_marker(run_dir: Path) -> None:
    (Path(run_dir) / MARKER).unlink(missing_ok=True)


@functools.cache
def _callback_class() -> type:
    import tensorflow as tf

    from hpml import distributed

    class Preemption(tf.keras.callbacks.Callback):
        """Stops `fit` on every rank after the first step at which any rank has a signal."""

        def __init__(self) -> None:
            super().__init__()
            self.requested = False  # agreed by all ranks
            self.steps_done = 0  # steps completed in the current fit() call

        @property
        def signalled(self) -> bool:
            return received() is not None

        def install(self) -> Preemption:
            install_handlers()
            return self

        def on_train_begin(self, logs=None) -> None:
            self.steps_done = 0

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.steps_done = batch + 1
            if distributed.any_rank(self.signalled, "preemption"):
                self.requested = True
                self.model.stop_training = True

    return Preemption


def __getattr__(name: str):
    if name == "Preemption":  # `from hpml.preemption import Preemption` builds the Keras class lazily
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
