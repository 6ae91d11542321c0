"""Render jobs/*.sbatch for a cluster profile.

The scripts in jobs/ are submittable as they are (Snellius defaults). Rendering replaces
their `# >>> profile` ... `# <<< profile` block with directives and variables from the
profile and inlines jobs/hpml-env.sh, so the script kept in RUN/slurm/ is exactly what ran,
and it runs where hpml is installed from a wheel (no checkout to source files from).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from hpml.core.config import Config
from hpml.slurm.profiles import ClusterProfile
from hpml.slurm.templates import jobs_dir, repository

BLOCK = re.compile(r"# >>> profile\n.*?# <<< profile\n", re.S)
SOURCE_ENV = re.compile(r'^source "\$\{HPML_HOME\}/jobs/hpml-env.sh"\n', re.M)


def directives(stage: str, profile: ClusterProfile, log_dir: Path, array: str | None = None) -> list[str]:
    p = profile
    limit = p.time["train" if stage == "sweep" else stage]
    log_name = "%x-%A_%a.out" if array else "%x-%j.out"
    lines = [f"--job-name=hpml-{stage}", f"--time={limit}", f"--output={log_dir}/{log_name}"]
    if p.account:
        lines.append(f"--account={p.account}")
    if stage == "preprocess":
        lines += [
            f"--partition={p.cpu_partition}",
            f"--ntasks={p.preprocess_tasks}",
            f"--cpus-per-task={p.cpus_per_preprocess_task}",
        ]
    else:
        lines += [
            f"--partition={p.partition}",
            f"--nodes={p.nodes}",
            f"--ntasks-per-node={p.ranks_per_node}",
            f"--cpus-per-task={p.cpus_per_task}",
        ]
        if p.gpus_per_node:  # pin by local rank in hpml; --gpus-per-task breaks NCCL peer access
            lines.append(f"--gpus-per-node={p.gpus_per_node}")
        if p.exclusive_nodes:  # a multi-node job must not share its nodes' network and memory bandwidth
            lines.append("--exclusive")
    if p.constraint:
        lines.append(f"--constraint={p.constraint}")
    if stage in ("train", "sweep"):
        lines += [f"--signal=B:USR1@{p.signal_lead_s}", "--requeue", "--open-mode=append"]  # one log across requeues
    if array:
        lines.append(f"--array={array}")
    if p.mail_user:
        lines.append(f"--mail-user={p.mail_user}")
    if p.mail_type:
        lines.append(f"--mail-type={p.mail_type}")
    return [f"#SBATCH {line}" for line in lines]


def _shell_value(value: str) -> str:
    """Quote for bash, but let `$TMPDIR`-style references expand on the compute node."""
    if "$" in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'
    return shlex.quote(value)


def container_binds(paths: list[str | Path | None]) -> list[str]:
    """What a job reads and writes, as Apptainer bind sources.

    A path that does not exist yet (shards a preprocess job will write) is bound through its
    nearest existing parent; symlinks are resolved (a bind of a link binds its target's name).
    """
    out: list[str] = []
    for raw in paths:
        if not raw or "$" in str(raw):
            continue
        path = Path(raw).expanduser().resolve()
        while not path.exists() and path != path.parent:
            path = path.parent
        if str(path) != "/" and str(path) not in out:
            out.append(str(path))
    return out


def variables(stage: str, profile: ClusterProfile, binds: list[str]) -> dict[str, str]:
    p = profile
    repo = repository()
    values = {
        "HPML_HOME": str(repo or ""),
        "HPML_VENV": sys.prefix if sys.prefix != sys.base_prefix else "",  # the environment hpml runs from
        "HPML_MODULES": " ".join(p.modules),
        "HPML_CONTAINER": p.container or "",
        "HPML_BINDS": ",".join(binds) if p.container else "",
        "HPML_LAUNCHER": p.launcher,
        "HPML_MPI": p.mpi,
        "HPML_CPU_BIND": p.cpu_bind or "",
        "HPML_GPU_BIND": p.gpu_bind or "",
        "HPML_OMP_THREADS": str(p.omp_num_threads or ""),
        "HPML_TF_INTRA_THREADS": str(p.tf_intra_op_threads or ""),
        "HPML_TF_INTER_THREADS": str(p.tf_inter_op_threads or ""),
    }
    if stage in ("train", "sweep"):
        values["HPML_MAX_RESTARTS"] = str(p.max_restarts)
        values["HPML_STAGE_DIR"] = p.scratch if p.stage else ""
    return values


def render(stage: str, profile: ClusterProfile, log_dir: Path, binds: list[str] = (), array: str | None = None) -> str:
    template_path = jobs_dir() / f"{stage}.sbatch"
    template = template_path.read_text()
    block = [*directives(stage, profile, log_dir, array), f"# rendered by `hpml submit` for profile '{profile.name}'"]
    for key, value in variables(stage, profile, list(binds)).items():
        # The staging path must reach each rank unexpanded: every node expands its own $TMPDIR.
        block.append(f"{key}={shlex.quote(value) if key == 'HPML_STAGE_DIR' else _shell_value(value)}")
    block += [f"export {k}={_shell_value(v)}" for k, v in {**profile.network, **profile.env}.items()]
    rendered, n = BLOCK.subn(lambda _: "# >>> profile\n" + "\n".join(block) + "\n# <<< profile\n", template)
    if n != 1:
        raise RuntimeError(f"{template_path}: no '# >>> profile' block to render")  # a bug in jobs/
    env = (jobs_dir() / "hpml-env.sh").read_text()
    inline = f"# >>> jobs/hpml-env.sh (inlined)\n{env}# <<< jobs/hpml-env.sh\n"
    rendered, n = SOURCE_ENV.subn(lambda _: inline, rendered)
    if n != 1:
        raise RuntimeError(f"{template_path}: no line sourcing jobs/hpml-env.sh to inline")
    return rendered


def resolved_paths(cfg: Config, run_dir: Path) -> list[str | Path | None]:
    """Everything a job of this run reads or writes (for container binds)."""
    return [run_dir, cfg.data.shards, cfg.data.split_dir, *cfg.data.sources, cfg.model.weights, repository()]
