"""Job efficiency after the fact: SLURM accounting (sacct) where the cluster has it, and the
ranks' own usage records (hpml.slurm.usage) everywhere. Written to RUN/efficiency.json.

From sacct: CPU efficiency = TotalCPU / (Elapsed x AllocCPUS) of the allocation, peak memory
(MaxRSS of the steps) against the request, and GPU utilisation where the cluster gathers it
(TRESUsageInAve gres/gpuutil: GPU gres via NVML and AccountingStorageTRES=gres/gpuutil).
Without accounting sacct says so, and the report says so too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from hpml.core.runfiles import RunDir
from hpml.slurm import usage

SACCT_FORMAT = "JobID,State,ElapsedRaw,AllocCPUS,TotalCPU,MaxRSS,ReqMem,AllocTRES,TRESUsageInAve"
_UNITS = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}


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


def from_sacct(job_id: str) -> dict:
    """One job (all its runs with --duplicates) from sacct, or {'error': why}."""
    if not shutil.which("sacct"):
        return {"error": "no sacct here"}
    proc = subprocess.run(
        ["sacct", "-n", "-P", "--duplicates", "-j", job_id, f"--format={SACCT_FORMAT}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip() or f"sacct exited {proc.returncode}"}
    rows = [
        dict(zip(SACCT_FORMAT.split(","), line.split("|"), strict=False)) for line in proc.stdout.splitlines() if line
    ]
    allocs = [r for r in rows if "." not in r["JobID"]]  # one per run; steps are `ID.batch`, `ID.0`
    if not allocs:
        return {"error": "not known to sacct"}
    core_s = sum(int(r["ElapsedRaw"] or 0) * int(r["AllocCPUS"] or 0) for r in allocs)
    cpu_s = sum(cpu_seconds(r["TotalCPU"]) for r in allocs if r["TotalCPU"])
    rss = [megabytes(r["MaxRSS"]) for r in rows if r["MaxRSS"]]
    gpus = [int(_tres(r["AllocTRES"]).get("gres/gpu", 0)) for r in allocs]
    util = [float(_tres(r["TRESUsageInAve"])["gres/gpuutil"]) for r in rows if "gres/gpuutil=" in r["TRESUsageInAve"]]
    return {
        "runs": len(allocs),
        "states": [r["State"] for r in allocs],
        "elapsed_s": sum(int(r["ElapsedRaw"] or 0) for r in allocs),
        "cpu_efficiency": round(cpu_s / core_s, 4) if core_s else None,
        "max_rss_mb": round(max(rss), 1) if rss else None,
        "requested_memory": allocs[-1]["ReqMem"] or None,
        "gpu_hours": round(sum(int(r["ElapsedRaw"] or 0) * g for r, g in zip(allocs, gpus, strict=False)) / 3600, 4),
        "gpu_utilisation_pct": round(sum(util) / len(util), 1) if util else None,
    }


def efficiency(run_dir: Path, job_ids: list[str]) -> dict:
    """Everything known about what the run's jobs used; also written to RUN/efficiency.json."""
    records = usage.load(run_dir)
    doc = {
        "measured_by_ranks": usage.totals(records) if records else None,
        "sacct": {job: from_sacct(job) for job in job_ids},
    }
    errors = {v["error"] for v in doc["sacct"].values() if "error" in v}
    if errors:
        doc["sacct_unavailable"] = sorted(errors)
    if not any("gpu_utilisation_pct" in v and v["gpu_utilisation_pct"] is not None for v in doc["sacct"].values()):
        doc["gpu_utilisation"] = (
            "not exposed by this cluster's accounting (needs gres/gpuutil in AccountingStorageTRES)"
        )
    path = RunDir(run_dir).efficiency
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def summary(run_dir: Path, doc: dict) -> str:
    lines = [f"efficiency of {run_dir} (written to {Path(run_dir) / 'efficiency.json'})"]
    ranks = doc.get("measured_by_ranks")
    if ranks:
        lines.append(
            f"  measured by the ranks: {ranks['runs']} run(s), wall {ranks['wall_hours']:.3f} h, "
            f"CPU efficiency {_pct(ranks['cpu_efficiency'])} ({ranks['cpu_hours_used']:.3f} of "
            f"{ranks['cpu_hours_allocated']:.3f} core-hours), peak memory {ranks['max_rss_mb']:.0f} MB per rank, "
            f"GPU-hours {ranks['gpu_hours']:.3f}"
        )
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
    if doc.get("gpu_utilisation"):
        lines.append(f"  GPU utilisation: {doc['gpu_utilisation']}")
    return "\n".join(lines)
