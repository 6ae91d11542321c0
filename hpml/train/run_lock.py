"""Who may write a run directory: one training at a time.

One training at a time per run directory: rank 0 holds RUN/.lock (host, pid and its start
time, SLURM job). A second training of the same RUN is refused with the holder named; a lock
whose holder is gone (same host: the process no longer exists; another node: SLURM says the
job ended; the same SLURM job: a requeued incarnation) is taken over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

from hpml.core.errors import UsageError
from hpml.core.files import write_text_atomic
from hpml.core.runfiles import RunDir

log = logging.getLogger(__name__)


class RunLocked(UsageError):
    """Another live training holds this run directory."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (guards against a reused pid)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder_alive(holder: dict) -> bool:
    job = os.environ.get("SLURM_JOB_ID")
    if holder.get("job") and holder["job"] == job:
        return False  # our own job before a requeue: that incarnation is gone
    if holder.get("host") == socket.gethostname():
        started = _start_time(int(holder.get("pid", -1)))
        return started is not None and started == holder.get("started")
    if holder.get("job"):  # another node: ask SLURM whether that job still runs
        try:
            state = subprocess.run(
                ["squeue", "-h", "-j", str(holder["job"]), "-o", "%T"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return True  # cannot tell: refuse rather than risk two writers
        return state in ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED")
    return True


def acquire_lock(run_dir: Path) -> Path:
    """Rank 0: take RUN/.lock, or take over a stale one; raises RunLocked if its holder lives."""
    path = RunDir(run_dir).lock
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _start_time(os.getpid()),
        "job": os.environ.get("SLURM_JOB_ID"),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            holder = {}
        if holder and _holder_alive(holder):
            raise RunLocked(
                f"{run_dir} is being trained by host {holder.get('host')} pid {holder.get('pid')} "
                f"(SLURM job {holder.get('job') or 'none'}, since {holder.get('since')}); wait for it to end or use "
                f"another --run-dir. If that process is gone for good, remove {path}."
            ) from None
        log.warning("taking over the stale lock %s of a run that is gone (%s)", path, holder or "unreadable")
        write_text_atomic(path, json.dumps(me) + "\n")
        return path
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(me) + "\n")
    return path


def release_lock(run_dir: Path) -> None:
    path = RunDir(run_dir).lock
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
