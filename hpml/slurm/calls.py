"""Calling SLURM's commands: bounded retries with back-off while a controller is busy.

A busy or restarting slurmctld (slurmdbd, for sacct) answers with a time-out, not a refusal: the
same call a few seconds later succeeds. Those failures are *transient* and retried, at most
`attempts` tries, waiting `delay`, 2 x `delay`, ... (capped at `max_delay`) in between. Anything
else ("Invalid job id specified", "accounting storage is disabled", a bad option) is *permanent*
and returned at once. SLURM's commands exit 1 for both kinds (sbatch: SLURM_EXIT_ERROR, default
1), so the message decides, never the exit code; a command that outlives its `timeout` here is
transient too.

Where the messages come from (SchedMD/slurm): `slurm_strerror()` in src/common/slurm_errno.c for
the SLURM errno in each key's comment, glibc's strerror for EAGAIN, ETIMEDOUT and EINTR, and
src/sbatch/sbatch.c for sbatch's own lines. sbatch already retries three refusals itself (queue
full, nodes busy, EAGAIN: 15 tries, sleeping 1, 2, ... s) and prints "Batch job submission
failed: ..." only after them; it never retries a time-out, after which the controller may have
created the job and lost only its answer (hpml.slurm.submit looks before it retries). The client
library already retries its connect for MessageTimeout seconds (src/common/slurm_protocol_api.c,
_open_controller), so "Unable to contact slurm controller" means it stayed unreachable that long.
jobs/hpml-env.sh classifies `scontrol requeue` with the same list (a test pins the two together).

HPML_SLURM_ATTEMPTS (5), HPML_SLURM_DELAY (2 s, the first wait) and HPML_SLURM_TIMEOUT (each
call's own limit: 60 s, sbatch 300 s) change the defaults for a whole command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

TRANSIENT = {  # lower-case text of the message -> where it comes from
    "socket timed out on send/recv operation": "SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT",
    "zero bytes were transmitted or received": "SLURM_PROTOCOL_SOCKET_ZERO_BYTES_SENT",
    "unable to contact slurm controller": "SLURMCTLD_COMMUNICATIONS_{CONNECTION,SEND,RECEIVE,SHUTDOWN}_ERROR",
    "communication connection failure": "SLURM_COMMUNICATIONS_CONNECTION_ERROR",
    "message send failure": "SLURM_COMMUNICATIONS_SEND_ERROR",
    "message receive failure": "SLURM_COMMUNICATIONS_RECEIVE_ERROR",
    "connection timed out": "SLURM_COMMUNICATIONS_{CONNECT,WRITE,READ}_TIMEOUT; ETIMEDOUT",
    "rate limit exceeded": "SLURMCTLD_COMMUNICATIONS_BACKOFF, _HARD_DROP (slurmctld's rate limiting)",
    "resource temporarily unavailable": "EAGAIN",
    "temporarily unable to accept job": "sbatch, after its own retries of EAGAIN",
    "slurm job queue full": "sbatch, after its own retries of ESLURM_ERROR_ON_DESC_TO_RECORD_COPY",
    "unable to create job record, try again": "ESLURM_ERROR_ON_DESC_TO_RECORD_COPY",
    "job can not be altered now, try again later": "ESLURM_TRANSITION_STATE_NO_UPDATE",
    "controller in standby mode": "ESLURM_IN_STANDBY_MODE",
    "controller is in standby mode": "ESLURM_IN_STANDBY_USE_BACKUP",
    "unable to connect to database": "ESLURM_DB_CONNECTION (sacct -> slurmdbd)",
    "problem talking to the database": "sacct, when slurmdbd does not answer",
    "interrupted system call": "EINTR",
}


def is_transient(text: str) -> bool:
    low = text.lower()
    return any(message in low for message in TRANSIENT)


@dataclass
class SlurmResult:
    cmd: list[str]
    returncode: int | None = None  # None: not started (missing), or stopped at the time-out
    stdout: str = ""
    stderr: str = ""
    tries: int = 0
    missing: bool = False  # the command is not on PATH: no SLURM here
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def transient(self) -> bool:
        return not self.ok and not self.missing and (self.timed_out or is_transient(self.stderr + self.stdout))

    @property
    def error(self) -> str:
        """What went wrong, in one line: SLURM's last message, or why there is none."""
        if self.missing:
            return "not found"
        if self.timed_out:
            return "no answer (time-out)"
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exited {self.returncode}"

    def said(self) -> str:
        """The error, named by its command: `scontrol: slurm_load_jobs error: ...`."""
        return self.error if self.error.startswith(f"{self.cmd[0]}:") else f"{self.cmd[0]}: {self.error}"

    def describe(self) -> str:
        return self.said() + (f" ({self.tries} tries)" if self.tries > 1 else "")


def _env(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def default_attempts() -> int:
    return max(1, int(_env("HPML_SLURM_ATTEMPTS", 5)))


def delays(attempts: int, delay: float | None = None, max_delay: float = 30.0) -> Iterator[float]:
    """The waits between `attempts` tries: delay, 2 x delay, 4 x delay, ... at most max_delay."""
    delay = _env("HPML_SLURM_DELAY", 2.0) if delay is None else delay
    for i in range(attempts - 1):
        yield min(delay * 2**i, max_delay)


def run_once(cmd: list[str], timeout: float = 60.0) -> SlurmResult:
    timeout = _env("HPML_SLURM_TIMEOUT", timeout)
    if not shutil.which(cmd[0]):
        return SlurmResult(list(cmd), missing=True, tries=1)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out, err = (x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (exc.stdout, exc.stderr))
        return SlurmResult(list(cmd), None, out, err, tries=1, timed_out=True)
    except OSError as exc:  # found but not runnable: permanent
        return SlurmResult(list(cmd), 127, "", str(exc), tries=1)
    return SlurmResult(list(cmd), proc.returncode, proc.stdout, proc.stderr, tries=1)


def print_note(text: str) -> None:
    print(f"hpml: {text}", file=sys.stderr, flush=True)


def run_slurm(
    cmd: list[str],
    attempts: int | None = None,
    timeout: float = 60.0,
    delay: float | None = None,
    max_delay: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = print_note,
) -> SlurmResult:
    """Run a SLURM command; retry transient failures only, `attempts` tries at most."""
    attempts = default_attempts() if attempts is None else max(1, attempts)
    waits = delays(attempts, delay, max_delay)
    tries = 0
    while True:
        result = run_once(cmd, timeout)
        tries += 1
        result.tries = tries
        if result.ok or not result.transient:
            return result
        wait = next(waits, None)
        if wait is None:
            return result
        if log:
            log(f"{result.said()} (try {tries}/{attempts}); trying again in {wait:g} s")
        sleep(wait)


@dataclass
class Session:
    """The SLURM calls of one answer (one `hpml status` refresh, one efficiency report).

    A command that stayed unreachable after its retries is not called again in the same session:
    later calls get that failure at once, so a sweep of 100 points waits for one time-out, not 100.
    """

    attempts: int | None = None
    delay: float | None = None
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] | None = print_note
    down: dict[str, SlurmResult] = field(default_factory=dict)

    def run(self, cmd: list[str], timeout: float = 60.0) -> SlurmResult:
        if cmd[0] in self.down:
            failed = self.down[cmd[0]]
            return SlurmResult(
                list(cmd), failed.returncode, "", failed.stderr, failed.tries, timed_out=failed.timed_out
            )
        result = run_slurm(cmd, self.attempts, timeout, self.delay, sleep=self.sleep, log=self.log)
        if result.transient:
            self.down[cmd[0]] = result
        return result
