"""`hpml submit`: render jobs/*.sbatch for a cluster profile, submit, chain with dependencies.

The scripts in jobs/ are submittable as they are (Snellius defaults). Rendering replaces only
their `# >>> profile` ... `# <<< profile` block with directives and variables from the
profile; the exact script submitted is kept in RUN/slurm/ next to the resolved config, so a
run records what ran.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hpml.cluster import ClusterProfile
from hpml.config import Config, save_config
from hpml.failure import UsageError

JOBS = Path(__file__).resolve().parents[1] / "jobs"
BLOCK = re.compile(r"# >>> profile\n.*?# <<< profile\n", re.S)


class SubmitError(UsageError, RuntimeError):
    """sbatch refused a job."""


@dataclass
class Job:
    stage: str
    script: Path
    args: list[str]
    dependency: str | None = None  # a job id (afterok)

    def command(self, dependency_id: str | None = None) -> list[str]:
        cmd = ["sbatch", "--parsable"]
        if dependency_id:
            cmd.append(f"--dependency=afterok:{dependency_id}")
        return [*cmd, str(self.script), *self.args]


def directives(stage: str, profile: ClusterProfile, log_dir: Path) -> list[str]:
    p = profile
    lines = [f"--job-name=hpml-{stage}", f"--time={p.time[stage]}", f"--output={log_dir}/%x-%j.out"]
    if p.account:
        lines.append(f"--account={p.account}")
    if stage == "preprocess":
        lines += [f"--partition={p.cpu_partition}", f"--ntasks={p.preprocess_tasks}",
                  f"--cpus-per-task={p.cpus_per_preprocess_task}"]  # fmt: skip
    else:
        lines += [f"--partition={p.partition}", f"--nodes={p.nodes}", f"--ntasks-per-node={p.ranks_per_node}",
                  f"--cpus-per-task={p.cpus_per_gpu}"]  # fmt: skip
        if p.gpus_per_node:  # pin by local rank in hpml; --gpus-per-task breaks NCCL peer access
            lines.append(f"--gpus-per-node={p.gpus_per_node}")
    if stage == "train":
        lines += [f"--signal=B:USR1@{p.signal_lead_s}", "--requeue", "--open-mode=append"]  # one log across requeues
    return [f"#SBATCH {line}" for line in lines]


def _shell_value(value: str) -> str:
    """Quote for bash, but let `$TMPDIR`-style references expand on the compute node."""
    if "$" in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'
    return shlex.quote(value)


def render(stage: str, profile: ClusterProfile, log_dir: Path) -> str:
    template = (JOBS / f"{stage}.sbatch").read_text()
    variables = {
        "HPML_HOME": str(JOBS.parent),
        "HPML_MODULES": " ".join(profile.modules),
        "HPML_CONTAINER": profile.container or "",
        "HPML_LAUNCHER": profile.launcher,
        "HPML_MPI": profile.mpi,
    }
    if stage == "train":
        variables["HPML_STAGE_DIR"] = profile.scratch if profile.stage else ""
    block = [*directives(stage, profile, log_dir), f"# rendered by `hpml submit` for cluster profile '{profile.name}'"]
    block += [f"{k}={_shell_value(v)}" for k, v in variables.items()]
    block += [f"export {k}={_shell_value(v)}" for k, v in profile.env.items()]
    rendered, n = BLOCK.subn("# >>> profile\n" + "\n".join(block) + "\n# <<< profile\n", template)
    if n != 1:
        raise RuntimeError(f"{JOBS / stage}.sbatch: no '# >>> profile' block to render")  # a bug in jobs/
    return rendered


def plan(what: str, cfg: Config, profile: ClusterProfile, run_dir: Path, split: str) -> list[Job]:
    """Write the rendered scripts and the resolved config into RUN/slurm/; return the jobs."""
    slurm_dir = run_dir.resolve() / "slurm"
    slurm_dir.mkdir(parents=True, exist_ok=True)
    config = slurm_dir / "config.yaml"
    save_config(cfg, config)
    stages = ["preprocess", "train", "evaluate"] if what == "pipeline" else [what]
    args = {
        "preprocess": [str(config)],
        "train": [str(config), str(run_dir.resolve())],
        "evaluate": [str(run_dir.resolve()), "--split", split],
    }
    jobs = []
    for stage in stages:
        script = slurm_dir / f"{stage}.sbatch"
        script.write_text(render(stage, profile, slurm_dir))
        jobs.append(Job(stage, script, args[stage], dependency=jobs[-1].stage if jobs else None))
    return jobs


def submit(jobs: list[Job], dry_run: bool = False) -> dict[str, str]:
    """Submit in order, each after the previous one succeeded; returns {stage: job id}."""
    ids: dict[str, str] = {}
    for job in jobs:
        dependency = ids.get(job.dependency, f"<{job.dependency} job id>") if job.dependency else None
        cmd = job.command(dependency)
        if dry_run:
            print("would run:", shlex.join(cmd))
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SubmitError(f"sbatch refused the {job.stage} job: {proc.stderr.strip()}")
        ids[job.stage] = proc.stdout.strip().split(";")[0]
        print(f"submitted {job.stage}: job {ids[job.stage]}  ({job.script})")
    return ids
