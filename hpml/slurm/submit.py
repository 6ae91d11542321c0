"""`hpml submit`: write the rendered scripts into RUN/slurm/, sbatch them, chain the stages.

Chained stages carry `--kill-on-invalid-dep=yes`: when a stage fails, SLURM removes the stages
waiting on it instead of leaving them pending forever. When a later `sbatch` is refused, the
stages already queued are cancelled, so a half-submitted pipeline never runs.

A busy controller can answer sbatch with a time-out after it created the job (the answer is
lost, the job is queued). So each submission carries a tag of its own on its command line
(`--comment=hpml:<random>`), and after a transient failure sbatch is tried again only when the
queue holds no job with that tag; a job found there is the submission, and its id is used. The
tries are bounded (hpml.slurm.calls); if the queue cannot be read either, nothing is retried and
the error names the tag to look for.
"""

from __future__ import annotations

import getpass
import json
import shlex
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from hpml.core.config import Config, save_config
from hpml.core.errors import UsageError
from hpml.core.runfiles import RunDir
from hpml.slurm import calls
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
    tag: str = field(default_factory=lambda: f"hpml:{uuid.uuid4().hex[:16]}")  # finds it after a lost answer

    def command(self, dependency_id: str | None = None) -> list[str]:
        cmd = ["sbatch", "--parsable"]
        if dependency_id:
            cmd += [f"--dependency=afterok:{dependency_id}", "--kill-on-invalid-dep=yes"]
        return [*cmd, f"--comment={self.tag}", str(self.script), *self.args]


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
        calls.run_slurm(["scancel", *ids], timeout=60)


SBATCH_TIMEOUT = 300.0  # sbatch retries a full queue itself for up to 15 tries (1 + 2 + ... + 15 s)


def queued_with_tag(tag: str) -> list[str] | None:
    """Job ids (array jobs: the array's id) in the queue whose comment is `tag`; None: unknown."""
    res = calls.run_slurm(["squeue", "-h", "-t", "all", "-u", getpass.getuser(), "-o", "%F %k"], timeout=60)
    if not res.ok:
        return None
    found = [line.split(None, 1) for line in res.stdout.splitlines() if line.strip()]
    return list(dict.fromkeys(f[0] for f in found if len(f) == 2 and f[1].strip() == tag))


def _cancel_twins(tag: str, kept: str) -> None:
    """A first try whose job showed up only after the queue was read: the retry's job is kept."""
    twins = [i for i in queued_with_tag(tag) or [] if i != kept]
    if twins:
        calls.print_note(f"sbatch: job(s) {', '.join(twins)} also carry {tag} (an earlier try): cancelling them")
        cancel(twins)


def sbatch(cmd: list[str], tag: str, attempts: int | None = None, sleep=time.sleep) -> calls.SlurmResult:
    """sbatch; after a transient failure, the queue is read for a job tagged `tag` first, and
    sbatch is tried again only when there is none (at most `attempts` tries).

    Returns sbatch's result, or one made from the queue (stdout = the job id found there).
    """
    attempts = calls.default_attempts() if attempts is None else max(1, attempts)
    waits = list(calls.delays(attempts + 1))  # one more: the last try is looked for too
    for tries in range(1, attempts + 1):
        res = calls.run_once(cmd, SBATCH_TIMEOUT)
        res.tries = tries
        if res.ok and tries > 1:
            _cancel_twins(tag, res.stdout.strip().split(";")[0])
        if res.ok or not res.transient:
            return res
        calls.print_note(f"{res.said()} (try {tries}/{attempts}); looking for a job {tag} in the queue")
        sleep(waits[tries - 1])  # a submission the controller is still processing shows up meanwhile
        found = queued_with_tag(tag)
        if found is None:
            res.stderr += (
                f"\nthe queue could not be read to tell whether the job ({tag}) was queued: look for it with "
                f"`squeue --me -o '%i %k'` before submitting again"
            )
            return res
        if found:
            calls.print_note(f"sbatch: the job was queued nonetheless: job {found[0]} ({tag})")
            return calls.SlurmResult(cmd, 0, f"{found[0]}\n", res.stderr, tries)
    res.stderr += f"\nno job {tag} in the queue after {attempts} tries"
    return res


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
        proc = sbatch(cmd, job.tag)
        if proc.missing:
            raise SubmitError("sbatch not found: submit from a SLURM login node (or use --dry-run)")
        if not proc.ok:
            cancel(list(ids.values()))
            queued = f"; cancelled the stages already queued: {', '.join(f'{s} {i}' for s, i in ids.items())}"
            why = "did not answer" if proc.transient else "refused"
            raise SubmitError(f"sbatch {why} the {job.stage} job: {proc.stderr.strip()}" + (queued if ids else ""))
        ids[job.stage] = proc.stdout.strip().split(";")[0]
        show(f"submitted {job.stage}: job {ids[job.stage]}  ({job.script})")
    return ids
