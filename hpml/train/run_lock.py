"""Who may write a run directory: one training at a time.

One training at a time per run directory: rank 0 holds RUN/.lock (host, pid and its start
time, SLURM job, restart and step), taken atomically through hpml.core.exclusive. A second
training of the same RUN is refused with the holder named, also a second `hpml train` step of
the same SLURM job while the first lives; a lock whose holder is gone (same host: the process no
longer exists; another node: SLURM says its job or step ended; an earlier incarnation of this
job before a requeue) is taken over, by one taker only however many try at once.
"""

from __future__ import annotations

from pathlib import Path

from hpml.core import exclusive
from hpml.core.errors import UsageError
from hpml.core.runfiles import RunDir


class RunLocked(UsageError):
    """Another live training holds this run directory."""


def acquire_lock(run_dir: Path) -> Path:
    """Rank 0: take RUN/.lock, or take over a stale one; raises RunLocked if its holder lives."""
    path = RunDir(run_dir).lock
    try:
        return exclusive.acquire(path)
    except exclusive.Locked as exc:
        raise RunLocked(
            f"{run_dir} is being trained by {exc.who()}; wait for it to end or use another --run-dir. "
            f"If that process is gone for good, remove {path}."
        ) from None


def release_lock(run_dir: Path) -> None:
    exclusive.release(RunDir(run_dir).lock)
