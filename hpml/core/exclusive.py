"""Exclusive ownership of a folder: one lock file that names its holder, taken atomically.

`acquire(path)` creates `path` holding this process's identity (host, pid and its start time,
pid namespace, SLURM job / restart / step, a random token) or raises `Locked` naming the holder.
Preprocessing holds `OUT/.lock`, training `RUN/.lock`.

Why it is safe on a shared file system (NFS, Lustre, GPFS), where flock may be missing or local:
- The lock appears whole and at once: its content is written to a private temporary file that is
  then hard-linked to `path`. link() is atomic and fails if `path` exists (also a symlink), so
  exactly one creator wins and no reader ever sees a half-written lock. (Where the file system
  has no hard links it falls back to O_CREAT|O_EXCL; a reader that sees the file still empty
  treats the holder as unknown, i.e. alive.)
- A stale lock (holder dead) is removed only under a second lock, `path.break`, taken by the same
  rule; under it the lock is read again and removed only if it is still the very file (inode
  and token) judged stale. Then the breaker is released and the taker competes for `path` like
  any creator. Nothing else removes a lock but its own live holder, so two takeovers of one
  stale lock cannot both win: the second sees the first's live lock, or nothing and loses the
  link() race. A breaker left by a process that died within its microseconds is itself stale
  and is broken the same way (`path.break.break`).
- Whether a holder lives: on its own host (and pid namespace) from /proc/<pid> and the process
  start time recorded in the lock (a reused pid does not count); otherwise from SLURM: an earlier
  incarnation of our own job (lower restart count) is gone; a holder of our own job and
  incarnation lives while its job step runs; another job lives while squeue says it runs. When
  none of this can tell, the holder counts as alive: refusing is safe, two writers are not.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from hpml.core.errors import UsageError

log = logging.getLogger(__name__)

BREAK = ".break"  # the lock under which a stale lock is removed
MAX_DEPTH = 3  # path.break.break.break: more would take a chain of crashes within microseconds
WAIT_S = 10.0  # how long a taker waits for another process's takeover to finish
LIVE_STATES = ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING")
_held: dict[str, str] = {}  # lock path -> token, for the locks this process holds


class Locked(UsageError):
    """A live (or unknowable) holder has the lock; `holder` is its identity ({} when unreadable)."""

    def __init__(self, path: Path, holder: dict[str, Any], note: str = "") -> None:
        self.path, self.holder, self.note = Path(path), holder, note
        super().__init__(f"{path} is held by {self.who()}; if that process is gone for good, remove {path}")

    def who(self) -> str:
        """The holder and what is known of it, for the caller's own message."""
        unknown = f"an unknown holder ({self.path} cannot be read)"
        return (describe(self.holder) if self.holder else unknown) + self.note


def describe(holder: dict[str, Any]) -> str:
    """`host H pid P (SLURM job J, since S)`: who holds a lock, for error messages."""
    return (
        f"host {holder.get('host')} pid {holder.get('pid')} "
        f"(SLURM job {holder.get('job') or 'none'}, since {holder.get('since')})"
    )


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (guards against a reused pid); None
    when it is gone, also when only its zombie is left (a container's init may reap late)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, ValueError):
        return None
    return None if len(fields) < 20 or fields[0] in ("Z", "X") else fields[19]


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def identity(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """This process as a lock holder."""
    env = os.environ if environ is None else environ
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": start_time(os.getpid()),
        "pidns": _pid_namespace(),
        "job": env.get("SLURM_JOB_ID"),
        "restart": int(env.get("SLURM_RESTART_COUNT") or 0),
        "step": env.get("SLURM_STEP_ID"),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "token": uuid.uuid4().hex,
    }


def _squeue(*args: str) -> list[str] | None:
    """squeue's output lines, or None when SLURM cannot be asked."""
    try:
        proc = subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
        return None  # cannot tell (controller down, ...), unlike "that job is long gone"
    return proc.stdout.split()


def holder_alive(holder: dict[str, Any], environ: dict[str, str] | None = None) -> bool:
    """Whether the process that holds a lock may still be running (see the module docstring)."""
    try:
        return _alive(holder, os.environ if environ is None else environ)
    except (TypeError, ValueError):
        return True  # a lock we cannot make sense of: refuse rather than risk two writers


def _alive(holder: dict[str, Any], env: dict[str, str]) -> bool:
    pidns = holder.get("pidns")
    if holder.get("host") == socket.gethostname() and (pidns is None or pidns == _pid_namespace()):
        started = start_time(int(holder.get("pid", -1)))
        return started is not None and started == holder.get("started")
    job = holder.get("job")
    if not job:
        return True  # another host and no job to ask about: cannot tell
    if job == env.get("SLURM_JOB_ID"):
        if int(holder.get("restart") or 0) < int(env.get("SLURM_RESTART_COUNT") or 0):
            return False  # an earlier incarnation of this job: SLURM ended it before the requeue
        if holder.get("step") is None:
            return True
        steps = _squeue("-s", "-j", str(job), "-o", "%i")
        return steps is None or f"{job}.{holder['step']}" in steps
    states = _squeue("-j", str(job), "-o", "%T")
    return states is None or any(s in LIVE_STATES for s in states)


def _read(path: Path) -> tuple[dict[str, Any], tuple[int, int, str]] | None:
    """(holder, identity of the file) of the lock at `path`; None when there is none.

    The holder is {} when the file cannot be parsed (or is a symlink, which no lock ever is).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        return {}, (st.st_dev, st.st_ino, "")
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        raw = fh.read(65536)
    try:
        holder = json.loads(raw)
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        holder = {}
    return holder, (st.st_dev, st.st_ino, str(holder.get("token", "")))


def read_holder(path: Path) -> dict[str, Any] | None:
    """Who holds the lock at `path` ({} when unreadable), or None when nobody does."""
    seen = _read(Path(path))
    return None if seen is None else seen[0]


def _create(path: Path, holder: dict[str, Any]) -> bool:
    """Create the lock holding `holder`, whole and atomically; False when it exists."""
    data = (json.dumps(holder) + "\n").encode()
    tmp = path.with_name(f".{path.name}.{holder['token']}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            # NFS: a retransmitted link() whose first call succeeded answers EEXIST
            return os.stat(tmp).st_nlink == 2
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                raise
        return _create_exclusive(path, data)  # no hard links here
    finally:
        os.unlink(tmp)


def _create_exclusive(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def acquire(path: str | os.PathLike, holder: dict[str, Any] | None = None, _depth: int = 0) -> Path:
    """Take the lock at `path`, or take over a stale one; raises `Locked` if its holder lives."""
    path = Path(path)
    me = holder or identity()
    deadline = time.monotonic() + WAIT_S
    while True:
        if _create(path, me):
            _held[str(path)] = me["token"]
            return path
        seen = _read(path)
        if seen is None:
            continue  # released between our attempt and our look: try again
        theirs, ident = seen
        if not theirs or holder_alive(theirs):
            raise Locked(path, theirs)
        breaker = path.with_name(path.name + BREAK)
        if _depth >= MAX_DEPTH:
            raise Locked(path, theirs, f" (stale, but its takeover is blocked by {breaker})")
        try:
            acquire(breaker, {**me, "token": uuid.uuid4().hex}, _depth + 1)
        except Locked:  # another process is taking it over right now: look again shortly
            if time.monotonic() > deadline:
                raise Locked(path, theirs, f" (stale, but {breaker} is held: a takeover in progress)") from None
            time.sleep(random.uniform(0.005, 0.05))
            continue
        try:
            again = _read(path)
            if again is not None and again[1] == ident:  # still the very lock judged stale
                log.warning("taking over the stale lock %s of %s, which is gone", path, describe(theirs))
                os.unlink(path)
        finally:
            release(breaker)


def release(path: str | os.PathLike) -> None:
    """Remove the lock at `path` if this process holds it (a lock taken over meanwhile stays)."""
    path = Path(path)
    token = _held.pop(str(path), None)
    seen = _read(path)
    if token is None or seen is None or seen[1][2] != token:
        return
    path.unlink(missing_ok=True)
