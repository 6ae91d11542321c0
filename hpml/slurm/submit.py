"""`hpml submit`: write the rendered scripts into RUN/slurm/, sbatch them, chain the stages.

Chained stages carry `--kill-on-invalid-dep=yes`: when a stage fails, SLURM removes the stages
waiting on it instead of leaving them pending forever. When a later `sbatch` is refused, the
stages already queued are cancelled, so a half-submitted pipeline never runs.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hpml.core.config import Config, save_config
from hpml.core.errors import UsageError
from hpml.core.runfiles import RunDir
from hpml.slurm.profiles import ClusterProfile
from hpml.slurm.render import container_binds, render, resolved_paths, sbatch_path


class SubmitError(UsageError, RuntimeError):
    """sbatch refused a job."""


@dataclass
class Job:
    stage: str
    script: Path
    args: list[str]
    dependency: str | None = None  # the stage this one runs after (afterok)

    def command(self, dependency_id: str | None = None) -> list[str]:
        cmd = ["sbatch", "--parsable"]
        if dependency_id:
            cmd += [f"--dependency=afterok:{dependency_id}", "--kill-on-invalid-dep=yes"]
        return [*cmd, str(self.script), *self.args]


def plan(what: str, cfg: Config, profile: ClusterProfile, run_dir: Path, split: str) -> list[Job]:
    """Write the rendered scripts and the resolved config into RUN/slurm/; return the jobs."""
    run_dir = run_dir.resolve()
    slurm_dir = RunDir(run_dir).slurm
    sbatch_path(slurm_dir, "--run-dir")  # the job logs' directory, in an #SBATCH line: refused before mkdir
    slurm_dir.mkdir(parents=True, exist_ok=True)
    config = slurm_dir / "config.yaml"
    save_config(cfg, config)
    stages = ["preprocess", "train", "evaluate"] if what == "pipeline" else [what]
    args = {
        "preprocess": [str(config)],
        "train": [str(config), str(run_dir)],
        "evaluate": [str(run_dir), "--split", split],
    }
    paths = resolved_paths(cfg, run_dir)
    if profile.stage and "$" not in profile.scratch:
        paths.append(profile.scratch)
    binds = container_binds(paths)
    jobs = []
    for stage in stages:
        script = slurm_dir / f"{stage}.sbatch"
        script.write_text(render(stage, profile, slurm_dir, binds))
        jobs.append(Job(stage, script, args[stage], dependency=jobs[-1].stage if jobs else None))
    return jobs


def cancel(ids: list[str]) -> None:
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, text=True)


def record(run_dir: Path, ids: dict[str, str], kind: str = "run") -> None:
    """Append the submission to RUN/slurm/submitted.json (hpml status reads it)."""
    path = RunDir(run_dir).submitted
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "kind": kind, "jobs": ids})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    tmp.replace(path)


def submit(jobs: list[Job], dry_run: bool = False, show=print) -> dict[str, str]:
    """Submit in order, each after the previous one succeeded; returns {stage: job id}."""
    ids: dict[str, str] = {}
    for job in jobs:
        dependency = ids.get(job.dependency, f"<{job.dependency} job id>") if job.dependency else None
        cmd = job.command(dependency)
        if dry_run:
            show(f"# ---- {job.script} ----")
            show(job.script.read_text(), end="")
            show(f"# would run: {shlex.join(cmd)}\n")
            continue
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError:
            raise SubmitError("sbatch not found: submit from a SLURM login node (or use --dry-run)") from None
        if proc.returncode != 0:
            cancel(list(ids.values()))
            queued = f"; cancelled the stages already queued: {', '.join(f'{s} {i}' for s, i in ids.items())}"
            raise SubmitError(f"sbatch refused the {job.stage} job: {proc.stderr.strip()}" + (queued if ids else ""))
        ids[job.stage] = proc.stdout.strip().split(";")[0]
        show(f"submitted {job.stage}: job {ids[job.stage]}  ({job.script})")
    return ids
