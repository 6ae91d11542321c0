"""What SLURM knows about a job: scontrol while it remembers the job, sacct after that.

`scontrol show job` knows pending, running and recently ended jobs (MinJobAge, 300 s by
default) including the restart count; `sacct` knows them for good, but only where the
cluster runs accounting (slurmdbd). Without either the state is UNKNOWN, and says why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass

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

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict:
        return asdict(self)


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None


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


def _from_scontrol(job_id: str) -> JobInfo | None:
    proc = _run(["scontrol", "-o", "show", "job", job_id])
    if proc is None or proc.returncode != 0 or not proc.stdout.strip():
        return None
    records = [_fields(line) for line in proc.stdout.splitlines() if line.strip()]
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


def _from_sacct(job_id: str) -> JobInfo:
    fmt = "JobID,State,ExitCode,Elapsed,NodeList,Reason"
    proc = _run(["sacct", "-n", "-P", "-X", "--duplicates", "-j", job_id, f"--format={fmt}"])
    if proc is None:
        return JobInfo(job_id, note="no SLURM commands here")
    if proc.returncode != 0:
        return JobInfo(
            job_id, note=f"sacct: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}"
        )
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.strip()]
    rows = [r for r in rows if r[0] == job_id]
    if not rows:
        return JobInfo(job_id, note="not known to sacct")
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


def query(job_id: str) -> JobInfo:
    """scontrol first (knows the restart count of a live job), sacct for what it forgot."""
    return _from_scontrol(job_id) or _from_sacct(job_id)


def array_tasks(array_id: str, count: int) -> list[str]:
    return [f"{array_id}_{i}" for i in range(count)]
