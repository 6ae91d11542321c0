"""Job efficiency after the fact: SLURM accounting (sacct) where the cluster has it, and the
ranks' own usage records (hpml.slurm.usage) everywhere. Written to RUN/efficiency.json.

From sacct: CPU efficiency = TotalCPU / (Elapsed x AllocCPUS) of the allocation; time efficiency
= Elapsed (every run of a requeued job) / the time limit, and for a completed job a `--time` of
elapsed x 1.2 rounded up to the minute; memory efficiency = peak per node (the largest task's
MaxRSS x tasks per node, an upper estimate) / allocated memory per node (AllocTRES mem / node);
GPU utilisation where the cluster gathers it (TRESUsageInAve gres/gpuutil: GPU gres via NVML and
AccountingStorageTRES=gres/gpuutil). Without accounting sacct says so, and the report says so too.
The ranks' records give the same time figures against the script's `#SBATCH --time`, and memory
as one node's ranks' peaks summed against the job's memory per node.

sacct is asked through hpml.slurm.calls (time-outs retried, bounded); whatever it answers, or
fails to, the ranks' records are still reported.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from hpml.core.config import ConfigError
from hpml.core.runfiles import RunDir
from hpml.slurm import usage
from hpml.slurm.calls import run_slurm
from hpml.slurm.profiles import time_seconds

SACCT_FORMAT = (
    "JobID,State,ElapsedRaw,TimelimitRaw,AllocCPUS,TotalCPU,MaxRSS,ReqMem,AllocTRES,TRESUsageInAve,NTasks,NNodes"
)
_UNITS = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}
TIME_MARGIN = 1.2  # suggested --time = elapsed x this, rounded up to the minute


def cpu_seconds(text: str) -> float:
    """sacct TotalCPU: [DD-][HH:]MM:SS[.mmm] -> seconds."""
    days, _, rest = text.rpartition("-") if "-" in text else ("", "", text)
    parts = [float(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    h, m, s = parts
    return (int(days) if days else 0) * 86400 + h * 3600 + m * 60 + s


def megabytes(text: str) -> float | None:
    """sacct memory: `1234K`, `512M`, `1.5G`, `4000Mn`/`4Gc` (per node / per CPU) -> MB."""
    m = re.match(r"^([\d.]+)([KMGT]?)", text or "")
    if not m:
        return None
    return float(m.group(1)) * _UNITS.get(m.group(2) or "K", 1 / 1024)


def _tres(text: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)


def slurm_time(seconds: float) -> str:
    """Seconds -> SLURM's [D-]HH:MM:SS."""
    s = int(seconds)
    days, rest = divmod(s, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def suggested_time(elapsed_s: float) -> str:
    """A `--time` for the same work: elapsed x 1.2, rounded up to the minute."""
    return slurm_time(60 * max(1, math.ceil(elapsed_s * TIME_MARGIN / 60)))


def script_time_limit(script: Path | None) -> int | None:
    """`#SBATCH --time=...` of a rendered job script, in seconds."""
    try:
        m = re.search(r"^#SBATCH\s+--time[= ](\S+)", Path(script).read_text(), re.M) if script else None
        return time_seconds(m.group(1)) if m else None
    except (OSError, ConfigError):
        return None


def _time(elapsed_s: float | None, limit_s: int | None, completed: bool) -> dict:
    return {
        "time_limit_s": limit_s,
        "time_efficiency": round(elapsed_s / limit_s, 4) if elapsed_s is not None and limit_s else None,
        "suggested_time": suggested_time(elapsed_s) if completed and elapsed_s else None,
    }


def _summarise(rows: list[dict]) -> dict:
    allocs = [r for r in rows if "." not in r["JobID"]]  # one per run; steps are `ID.batch`, `ID.0`
    if not allocs:
        return {"error": "not known to sacct"}
    last = allocs[-1]
    core_s = sum(int(r["ElapsedRaw"] or 0) * int(r["AllocCPUS"] or 0) for r in allocs)
    cpu_s = sum(cpu_seconds(r["TotalCPU"]) for r in allocs if r["TotalCPU"])
    rss = [x for x in (megabytes(r["MaxRSS"]) for r in rows) if x is not None]
    gpus = [int(_tres(r["AllocTRES"]).get("gres/gpu", 0)) for r in allocs]
    util = [float(_tres(r["TRESUsageInAve"])["gres/gpuutil"]) for r in rows if "gres/gpuutil=" in r["TRESUsageInAve"]]
    elapsed_s = sum(int(r["ElapsedRaw"] or 0) for r in allocs)
    limit = last.get("TimelimitRaw") or ""
    alloc = _tres(last["AllocTRES"])
    mem_total = megabytes(alloc.get("mem", ""))
    per_node = mem_total / max(1, int(alloc.get("node") or 1)) if mem_total else None
    node_peaks = [  # steps: the largest task's MaxRSS x the step's tasks per node
        megabytes(r["MaxRSS"]) * math.ceil(int(r.get("NTasks") or 1) / max(1, int(r.get("NNodes") or 1)))
        for r in rows
        if "." in r["JobID"] and megabytes(r["MaxRSS"]) is not None
    ]
    node_peak = max(node_peaks) if node_peaks else None
    return {
        "runs": len(allocs),
        "states": [r["State"] for r in allocs],
        "elapsed_s": elapsed_s,
        **_time(elapsed_s, int(limit) * 60 if limit.isdigit() else None, last["State"].startswith("COMPLETED")),
        "cpu_efficiency": round(cpu_s / core_s, 4) if core_s else None,
        "max_rss_mb": round(max(rss), 1) if rss else None,
        "requested_memory": last["ReqMem"] or None,
        "mem_per_node_mb": round(per_node, 1) if per_node else None,
        "node_peak_rss_mb": round(node_peak, 1) if node_peak is not None else None,
        "memory_efficiency": round(node_peak / per_node, 4) if node_peak is not None and per_node else None,
        "gpu_hours": round(sum(int(r["ElapsedRaw"] or 0) * g for r, g in zip(allocs, gpus, strict=False)) / 3600, 4),
        "gpu_utilisation_pct": round(sum(util) / len(util), 1) if util else None,
    }


def from_sacct(job_id: str, run=run_slurm) -> dict:
    """One job (all its runs with --duplicates) from sacct, or {'error': why}; never raises."""
    res = run(["sacct", "-n", "-P", "--duplicates", "-j", job_id, f"--format={SACCT_FORMAT}"], timeout=60)
    if res.missing:
        return {"error": "no sacct here"}
    if not res.ok:
        return {
            "error": res.describe() if res.transient else res.stderr.strip() or res.error,
            "transient": res.transient,
        }
    names = SACCT_FORMAT.split(",")
    try:
        rows = [dict(zip(names, line.split("|"), strict=False)) for line in res.stdout.splitlines() if line]
        return _summarise(rows)
    except (ValueError, KeyError, TypeError) as exc:
        return {"error": f"sacct's answer could not be read ({type(exc).__name__}: {exc})"}


def _ranks(records: list[dict], scripts: dict[str, Path], sacct: dict[str, dict]) -> dict:
    """The ranks' totals, with time against the script's limit and memory against the request."""
    doc = usage.totals(records)
    job = doc["last_job"]
    runs = {r["restart"] for r in records if r["job"] == job}
    wall_s = sum(max(r["wall_s"] for r in records if (r["job"], r["restart"]) == (job, n)) for n in runs)
    acct = sacct.get(job, {})
    limit = script_time_limit(scripts.get(job)) or acct.get("time_limit_s")
    doc.update(last_job_wall_s=round(wall_s, 1), **_time(wall_s, limit, bool(doc["last_run_completed"])))
    if doc["memory_efficiency"] is None and doc["node_peak_rss_mb"] and acct.get("mem_per_node_mb"):
        doc["mem_per_node_mb"] = acct["mem_per_node_mb"]
        doc["memory_efficiency"] = round(doc["node_peak_rss_mb"] / acct["mem_per_node_mb"], 4)
    return doc


def efficiency(run_dir: Path, job_ids: list[str], scripts: dict[str, Path] | None = None, run=run_slurm) -> dict:
    """Everything known about what the run's jobs used; also written to RUN/efficiency.json.

    `scripts`: the rendered job script of each job (its `#SBATCH --time`), where known.
    """
    records = usage.load(run_dir)
    sacct = {job: from_sacct(job, run) for job in job_ids}
    doc = {"measured_by_ranks": _ranks(records, scripts or {}, sacct) if records else None, "sacct": sacct}
    errors = {v["error"] for v in doc["sacct"].values() if "error" in v}
    if errors:
        doc["sacct_unavailable"] = sorted(errors)
    if not any(v.get("gpu_utilisation_pct") is not None for v in doc["sacct"].values()):
        doc["gpu_utilisation"] = (
            "not exposed by this cluster's accounting (needs gres/gpuutil in AccountingStorageTRES)"
        )
    try:
        RunDir(run_dir).efficiency.write_text(json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        doc["not_written"] = str(exc)
    return doc


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _time_line(who: str, elapsed_s: float | None, d: dict, limit_from: str) -> str | None:
    if elapsed_s is None:
        return None
    if not d.get("time_limit_s"):
        return f"  time ({who}): elapsed {slurm_time(elapsed_s)}, time limit unknown"
    line = (
        f"  time ({who}): elapsed {slurm_time(elapsed_s)} = {_pct(d['time_efficiency'])} of the "
        f"{slurm_time(d['time_limit_s'])} limit ({limit_from})"
    )
    if d.get("suggested_time"):
        line += f"; completed: --time={d['suggested_time']} would do (elapsed x {TIME_MARGIN})"
    return line


def _memory_line(who: str, d: dict, peak_of: str) -> str | None:
    if d.get("node_peak_rss_mb") is None:
        return None
    line = f"  memory ({who}): peak {d['node_peak_rss_mb']:.0f} MB per node ({peak_of})"
    if d.get("memory_efficiency") is None:
        return line + ", requested memory per node unknown"
    return line + f" = {_pct(d['memory_efficiency'])} of the {d['mem_per_node_mb']:.0f} MB per node requested"


def summary(run_dir: Path, doc: dict) -> str:
    lines = [f"efficiency of {run_dir} (written to {Path(run_dir) / 'efficiency.json'})"]
    if doc.get("not_written"):
        lines[0] = f"efficiency of {run_dir} (not written: {doc['not_written']})"
    ranks = doc.get("measured_by_ranks")
    if ranks:
        lines.append(
            f"  measured by the ranks: {ranks['runs']} run(s), wall {ranks['wall_hours']:.3f} h, "
            f"CPU efficiency {_pct(ranks['cpu_efficiency'])} ({ranks['cpu_hours_used']:.3f} of "
            f"{ranks['cpu_hours_allocated']:.3f} core-hours), peak memory {ranks['max_rss_mb']:.0f} MB per rank, "
            f"GPU-hours {ranks['gpu_hours']:.3f}"
        )
        who = f"ranks, job {ranks['last_job']}"
        lines.append(_time_line(who, ranks.get("last_job_wall_s"), ranks, "#SBATCH --time"))
        lines.append(_memory_line(who, ranks, "its ranks' peaks summed"))
    else:
        lines.append("  measured by the ranks: no usage records (RUN/slurm/usage/) yet")
    for job, acct in doc["sacct"].items():
        if "error" in acct:
            lines.append(f"  sacct, job {job}: unavailable ({acct['error']})")
            continue
        gpu = f", GPU utilisation {acct['gpu_utilisation_pct']}%" if acct["gpu_utilisation_pct"] is not None else ""
        lines.append(
            f"  sacct, job {job}: {acct['runs']} run(s) {'/'.join(acct['states'])}, CPU efficiency "
            f"{_pct(acct['cpu_efficiency'])}, max RSS {acct['max_rss_mb']} MB (requested "
            f"{acct['requested_memory']}), GPU-hours {acct['gpu_hours']}{gpu}"
        )
        lines.append(_time_line(f"sacct, job {job}", acct.get("elapsed_s"), acct, "sacct"))
        lines.append(_memory_line(f"sacct, job {job}", acct, "largest task x tasks per node"))
    if doc.get("gpu_utilisation"):
        lines.append(f"  GPU utilisation: {doc['gpu_utilisation']}")
    return "\n".join(line for line in lines if line)
