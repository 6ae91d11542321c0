"""What SLURM knows about a job: scontrol while it remembers the job, sacct after that.

`scontrol show job` knows pending, running and recently ended jobs (MinJobAge, 300 s by
default) including the restart count; `sacct` knows them for good, but only where the
cluster runs accounting (slurmdbd). Without either the state is UNKNOWN, and says why.

Every call goes through hpml.slurm.calls (bounded retries of time-outs). When SLURM could not be
asked (a time-out after the retries) the state is UNKNOWN with `error` set: not known *now*,
which is not the same as a job SLURM does not know (`note`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

from hpml.slurm.calls import SlurmResult, run_slurm

Run = Callable[..., SlurmResult]  # run_slurm, or a calls.Session's run

TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "SPECIAL_EXIT",
}


@dataclass
class JobInfo:
    id: str  # as scontrol/scancel name it: `12` or `10_3` for an array task
    state: str = "UNKNOWN"
    reason: str | None = None
    restarts: int | None = None
    exit_code: str | None = None
    elapsed: str | None = None  # of the current (or last) run
    nodes: str | None = None
    source: str = "none"  # scontrol | sacct | none
    note: str | None = None
    error: str | None = None  # SLURM could not be asked now (a time-out after the retries)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict:
        return asdict(self)


def _fields(line: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def _task_ids(spec: str) -> set[int]:
    """`2-3%2`, `1,4-5` -> {2, 3}, {1, 4, 5}."""
    ids: set[int] = set()
    for part in spec.split("%")[0].split(","):
        if "-" in part:
            lo, hi = part.split("-")
            ids.update(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            ids.add(int(part))
    return ids


def _from_scontrol(job_id: str, stdout: str) -> JobInfo | None:
    records = [_fields(line) for line in stdout.splitlines() if line.strip()]
    if not records:
        return None
    record = records[0]
    if "_" in job_id:  # an array task: its own record, or the pending rest of the array
        task = int(job_id.split("_")[1])
        for r in records:
            if task in _task_ids(r.get("ArrayTaskId", "")):
                record = r
                break
        else:
            return None
    exit_code = record.get("ExitCode")
    return JobInfo(
        id=job_id,
        state=record.get("JobState", "UNKNOWN"),
        reason=None if record.get("Reason") in (None, "None") else record["Reason"],
        restarts=int(record["Restarts"]) if record.get("Restarts", "").isdigit() else None,
        exit_code=exit_code,
        elapsed=record.get("RunTime"),
        nodes=None if record.get("NodeList") in (None, "(null)") else record["NodeList"],
        source="scontrol",
    )


def _from_sacct(job_id: str, stdout: str) -> JobInfo | None:
    rows = [line.split("|") for line in stdout.splitlines() if line.strip()]
    rows = [r for r in rows if r[0] == job_id and len(r) >= 6]
    if not rows:
        return None
    last = rows[-1]  # --duplicates lists every run of a requeued job, oldest first
    requeued = sum(1 for r in rows if r[1].startswith("REQUEUED"))
    return JobInfo(
        job_id,
        state=re.sub(r" by \d+$", "", last[1]),
        exit_code=last[2],
        elapsed=last[3],
        nodes=None if last[4] in ("", "None assigned") else last[4],
        reason=last[5] or None,
        restarts=requeued,
        source="sacct",
    )


def query(job_id: str, run: Run = run_slurm) -> JobInfo:
    """scontrol first (knows the restart count of a live job), sacct for what it forgot.

    scontrol timing out does not mean the job is gone: sacct (another daemon) is asked, and
    when it cannot answer either, the job's state is UNKNOWN with `error` saying why.
    """
    sc = run(["scontrol", "-o", "show", "job", job_id], timeout=60)
    info = _from_scontrol(job_id, sc.stdout) if sc.ok else None
    if info:
        return info
    fmt = "JobID,State,ExitCode,Elapsed,NodeList,Reason"
    sa = run(["sacct", "-n", "-P", "-X", "--duplicates", "-j", job_id, f"--format={fmt}"], timeout=60)
    info = _from_sacct(job_id, sa.stdout) if sa.ok else None
    scontrol_error = sc.describe() if sc.transient else None
    if info:
        info.note = f"{scontrol_error}; state from sacct" if scontrol_error else None
        return info
    if scontrol_error or sa.transient:
        errors = [r.describe() for r in (sc, sa) if r.transient]
        note = None if sa.transient or sa.missing else ("not known to sacct" if sa.ok else f"sacct: {sa.error}")
        return JobInfo(job_id, note=note, error="; ".join(errors))
    if sc.missing and sa.missing:
        return JobInfo(job_id, note="no SLURM commands here")
    if sa.missing:
        return JobInfo(job_id, note=f"scontrol does not know it ({sc.error}) and there is no sacct here")
    if not sa.ok:
        return JobInfo(job_id, note=f"sacct: {sa.error}")
    return JobInfo(job_id, note="not known to sacct")


def array_tasks(array_id: str, count: int) -> list[str]:
    return [f"{array_id}_{i}" for i in range(count)]
