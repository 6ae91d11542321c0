"""`hpml status RUN|SWEEP`: SLURM's view of the jobs next to the run directory's own.

From SLURM (hpml.slurm.query): job id, state, reason, restarts, exit code, elapsed, nodes. From
the run directory, so it works without SLURM too: epoch and step, images/s and ETA from
RUN/status.json (rank 0 writes it while training), the last metrics from history.csv, and a
checkpoint-for-requeue marker if one is there.

SLURM calls are retried while the controller is busy (hpml.slurm.calls). A job SLURM could not
be asked about keeps its last known state in a --watch, with a note saying what failed; --watch
goes on through such refreshes (at most MAX_BLIND in a row with no answer at all).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hpml.core import history
from hpml.core.runfiles import SWEEP_FILE, RunDir
from hpml.slurm import query as slurmq
from hpml.slurm.calls import Session
from hpml.slurm.sweep import point_dir, task_ids

MAX_BLIND = 20  # --watch stops after this many refreshes in a row in which SLURM answered nothing
WATCH_ATTEMPTS = 3  # tries per call in one refresh: the next refresh tries again anyway


class Lookup:
    """SLURM's view of jobs, refresh after refresh: a job that SLURM could not be asked about
    (a time-out after the retries) keeps its last known state, with a note saying what failed."""

    def __init__(self, query=slurmq.query, attempts: int | None = None, clock=time.time, log=None):
        self.query, self.attempts, self.clock, self.log = query, attempts, clock, log
        self.known: dict[str, tuple[dict, float]] = {}
        self.refresh()

    def refresh(self) -> None:
        """A new round of calls: what SLURM could not answer last time is asked again."""
        self.session = Session(self.attempts, **({"log": self.log} if self.log else {}))
        self.failed: list[str] = []  # what SLURM could not answer in this round

    def __call__(self, job_id: str) -> dict:
        info = self.query(job_id, run=self.session.run).to_dict()
        if not info.get("error"):
            self.known[job_id] = (info, self.clock())
            return info
        self.failed.append(info["error"])
        if job_id not in self.known:
            return {**info, "note": f"{info['error']}; no state known yet"}
        last, when = self.known[job_id]
        seen = time.strftime("%H:%M:%S", time.localtime(when))
        return {**last, "error": info["error"], "note": f"{info['error']}; showing last known state (from {seen})"}


def last_submission(run_dir: Path) -> dict[str, str]:
    path = RunDir(run_dir).submitted
    entries = json.loads(path.read_text()) if path.is_file() else []
    return entries[-1]["jobs"] if entries else {}


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """RUN/status.json as rank 0 last wrote it (hpml.train.status_writer), or None."""
    try:
        return json.loads(RunDir(run_dir).status.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or replaced under our feet
        return None


def progress(run_dir: Path) -> dict:
    run = RunDir(run_dir)
    doc = read_status(run_dir) or {}
    out = {
        k: doc.get(k)
        for k in (
            "phase",
            "epoch",
            "epochs",
            "step_in_epoch",
            "steps_per_epoch",
            "global_step",
            "images_per_s",
            "eta_s",
            "job",
        )
    }
    out["updated_s_ago"] = round(time.time() - doc["updated"], 1) if doc.get("updated") else None
    rows = history.read(run.history)
    out["epochs_done"] = len(rows)
    last = {k: v for k, v in rows[-1].items() if k != "epoch" and k not in history.TEXT} if rows else None
    out["last"] = last or doc.get("last") or {}
    marker = run.marker
    out["preempted_marker"] = marker.read_text().splitlines()[0] if marker.is_file() else None
    return out


def run_status(run_dir: Path, lookup=None) -> dict:
    lookup = lookup or Lookup()
    jobs = [{"stage": stage, **lookup(job)} for stage, job in last_submission(run_dir).items()]
    return {"kind": "run", "path": str(run_dir), "jobs": jobs, "progress": progress(run_dir)}


def sweep_status(sweep_dir: Path, lookup=None) -> dict:
    lookup = lookup or Lookup()
    manifest = json.loads((sweep_dir / SWEEP_FILE).read_text())
    ids = task_ids(sweep_dir)
    points = []
    for p in manifest["points"]:
        job = ids.get(p["index"])
        points.append(
            {
                "point": p["index"],
                "label": p["label"],
                "job": lookup(job) if job else None,
                "progress": progress(point_dir(sweep_dir, p["index"])),
            }
        )
    return {"kind": "sweep", "path": str(sweep_dir), "points": points}


def collect(path: Path, lookup=None) -> dict:
    if (path / SWEEP_FILE).is_file():
        return sweep_status(path, lookup)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run or sweep directory")
    return run_status(path, lookup)


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _job_line(name: str, j: dict) -> str:
    why = f" ({j['reason']})" if j.get("reason") and j["state"] == "PENDING" else ""
    note = f"  [{j['note']}]" if j.get("note") else ""
    restarts = "-" if j["restarts"] is None else j["restarts"]
    return (
        f"  {name:<12} job {j['id']:<10} {j['state'] + why:<28} restarts {restarts}  exit {j['exit_code'] or '-'}"
        f"  elapsed {j['elapsed'] or '-'}  nodes {j['nodes'] or '-'}{note}"
    )


def _progress_lines(p: dict) -> list[str]:
    lines = []
    if p.get("epoch") is not None:
        rate = f"{p['images_per_s']:.1f} images/s" if p.get("images_per_s") else "images/s: -"
        lines.append(
            f"  training: {p.get('phase')} epoch {p['epoch']}/{p['epochs']} step {p['step_in_epoch']}/"
            f"{p['steps_per_epoch']}, {rate}, ETA {_duration(p.get('eta_s'))}, updated "
            f"{p['updated_s_ago']:.0f} s ago ({p.get('job')})"
        )
    if p.get("last"):
        lines.append(
            "  last: " + " ".join(f"{k} {v:.4g}" for k, v in p["last"].items()) + f" (epochs done {p['epochs_done']})"
        )
    if p.get("preempted_marker"):
        lines.append(f"  checkpointed for requeue: {p['preempted_marker']}")
    if not lines:
        lines.append("  training: not started")
    return lines


def render(doc: dict) -> str:
    if doc["kind"] == "run":
        lines = [f"run {doc['path']}"]
        lines += [_job_line(j["stage"], j) for j in doc["jobs"]] or ["  no SLURM jobs recorded (hpml submit)"]
        return "\n".join(lines + _progress_lines(doc["progress"]))
    lines = [f"sweep {doc['path']}: {len(doc['points'])} points"]
    for p in doc["points"]:
        lines.append(f"p{p['point']:03d} {p['label']}")
        lines.append(_job_line("train", p["job"]) if p["job"] else "  not submitted")
        lines += _progress_lines(p["progress"])
    return "\n".join(lines)


def _jobs_of(doc: dict) -> list[dict]:
    return doc["jobs"] if doc["kind"] == "run" else [p["job"] for p in doc["points"] if p["job"]]


def _watching(j: dict) -> bool:
    """Still worth a look: not ended, or not known now because SLURM did not answer."""
    return bool(j.get("error")) or (j["state"] not in slurmq.TERMINAL and j["state"] != "UNKNOWN")


def show(
    path: Path, as_json: bool = False, watch: float | None = None, stream=sys.stdout, sleep=time.sleep, lookup=None
) -> dict:
    """Print once, or every `watch` seconds until every job has ended (or SLURM knows none)."""
    lookup = lookup or Lookup(attempts=WATCH_ATTEMPTS if watch else None)
    notices = sys.stderr if as_json else stream  # keep --json output parseable
    blind = 0
    while True:
        lookup.refresh()
        doc = collect(path, lookup)
        text = json.dumps(doc, indent=1) if as_json else render(doc)
        if watch and stream.isatty():
            stream.write("\x1b[2J\x1b[H")  # clear the terminal between refreshes
        print(text, file=stream, flush=True)
        jobs = _jobs_of(doc)
        live = [j for j in jobs if _watching(j)]
        blind = blind + 1 if jobs and all(j.get("error") for j in jobs) else 0
        if not watch or not live:
            return doc
        if blind >= MAX_BLIND:
            print(
                f"SLURM answered nothing for {blind} refreshes in a row ({lookup.failed[-1]}); stopped watching: "
                f"run `hpml status {path}` again later",
                file=notices,
                flush=True,
            )
            return doc
        if lookup.failed:
            print(f"(SLURM did not answer this time: {lookup.failed[-1]}; watching on)", file=notices, flush=True)
        sleep(watch)
