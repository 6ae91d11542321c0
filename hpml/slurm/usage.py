"""What each rank of each run used, recorded by the rank itself when it exits.

RUN/slurm/usage/<job>.<restart>.rank<r>.json: wall time, CPU time, peak memory, the CPUs it
could run on, the GPUs it used, and the job's memory per node (SLURM_MEM_PER_NODE, or
SLURM_MEM_PER_CPU x SLURM_CPUS_ON_NODE, from the job's environment). This works on every
cluster, with or without SLURM accounting, and covers every run of a requeued job (sacct may
keep only the last one, and scontrol only the current one). hpml.slurm.efficiency turns it into
efficiency and GPU-hours.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from pathlib import Path

from hpml.core.jobid import job_identity
from hpml.core.runfiles import RunDir

_START = time.time()


def record(run_dir: Path, rank: int, exit_code: int, gpus: int) -> Path | None:
    """Write this rank's usage; never raises (it runs while the rank is exiting)."""
    try:
        self_, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        ident = dict(kv.split("=") for kv in job_identity().split())
        end = time.time()
        doc = {
            "job": ident["job"],
            "restart": int(ident["restart"]),
            "rank": rank,
            "host": socket.gethostname(),
            "start": _START,
            "end": end,
            "wall_s": round(end - _START, 3),
            "cpu_s": round(self_.ru_utime + self_.ru_stime + children.ru_utime + children.ru_stime, 3),
            "max_rss_kb": max(self_.ru_maxrss, children.ru_maxrss),  # Linux: kilobytes
            "cpus": len(os.sched_getaffinity(0)),
            "gpus": gpus,
            "exit": exit_code,
            "mem_per_node_mb": memory_per_node_mb(),
        }
        folder = RunDir(run_dir).usage
        folder.mkdir(parents=True, exist_ok=True)
        name = (
            f"{doc['job']}.{doc['restart']}.rank{rank}" if doc["job"] != "none" else f"local-{int(_START)}.rank{rank}"
        )
        path = folder / f"{name}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path
    except Exception:  # noqa: BLE001 - accounting must never turn a finished run into a failed one
        return None


def memory_per_node_mb(environ: dict[str, str] | None = None) -> float | None:
    """The job's memory on each node, in MB, as SLURM tells the job; None outside SLURM."""
    env = os.environ if environ is None else environ
    try:
        if env.get("SLURM_MEM_PER_NODE"):
            return float(env["SLURM_MEM_PER_NODE"])
        if env.get("SLURM_MEM_PER_CPU") and env.get("SLURM_CPUS_ON_NODE"):
            return float(env["SLURM_MEM_PER_CPU"]) * int(env["SLURM_CPUS_ON_NODE"])
    except ValueError:
        pass
    return None


def load(run_dir: Path) -> list[dict]:
    folder = RunDir(run_dir).usage
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def totals(records: list[dict]) -> dict:
    """Summed over ranks and runs: wall, CPU and GPU hours, CPU efficiency, peak memory; the
    peak of one node (its ranks' peaks summed) against the job's memory per node; the last run."""
    core_s = sum(r["wall_s"] * r["cpus"] for r in records)
    cpu_s = sum(r["cpu_s"] for r in records)
    runs = {(r["job"], r["restart"]) for r in records}
    return {
        "runs": len(runs),
        "rank_records": len(records),
        "wall_hours": round(
            sum(max(r["wall_s"] for r in records if (r["job"], r["restart"]) == run) for run in runs) / 3600, 4
        )
        if records
        else 0.0,
        "cpu_hours_allocated": round(core_s / 3600, 4),
        "cpu_hours_used": round(cpu_s / 3600, 4),
        "cpu_efficiency": round(cpu_s / core_s, 4) if core_s else None,
        "gpu_hours": round(sum(r["wall_s"] * r["gpus"] for r in records) / 3600, 4),
        "max_rss_mb": round(max((r["max_rss_kb"] for r in records), default=0) / 1024, 1),
        **_node_memory(records),
        **_last_run(records),
    }


def _node_memory(records: list[dict]) -> dict:
    nodes: dict[tuple, float] = {}
    for r in records:
        key = (r["job"], r["restart"], r.get("host"))
        nodes[key] = nodes.get(key, 0.0) + r["max_rss_kb"] / 1024
    peak = max(nodes.values(), default=None)
    limits = [r["mem_per_node_mb"] for r in records if r.get("mem_per_node_mb")]
    limit = max(limits) if limits else None
    return {
        "node_peak_rss_mb": None if peak is None else round(peak, 1),
        "mem_per_node_mb": limit,
        "memory_efficiency": round(peak / limit, 4) if peak is not None and limit else None,
    }


def _last_run(records: list[dict]) -> dict:
    """The run that ended last: its job, and whether every one of its ranks exited 0."""
    if not records:
        return {"last_job": None, "last_run_completed": None}
    last = max(records, key=lambda r: r.get("end", 0))
    ranks = [r for r in records if (r["job"], r["restart"]) == (last["job"], last["restart"])]
    return {"last_job": last["job"], "last_run_completed": all(r.get("exit") == 0 for r in ranks)}
