r"""Render jobs/*.sbatch for a cluster profile.

The scripts in jobs/ are submittable as they are (Snellius defaults). Rendering replaces
their `# >>> profile` ... `# <<< profile` block with directives and variables from the
profile and inlines jobs/hpml-env.sh, so the script kept in RUN/slurm/ is exactly what ran,
and it runs where hpml is installed from a wheel (no checkout to source files from).

One rendering rule (issue 24). Every value is checked first: no control characters
(hpml.slurm.profiles.check_text). Then:
- a shell value (`HPML_*=`, `export KEY=`) goes through `shell_value` alone: bare when it holds
  only [A-Za-z0-9_@%+=:,./-], otherwise single-quoted with each ' written '\'' -- nothing in it
  expands, on the login node or the compute node. `export` keys are shell variable names.
- an `#SBATCH` line is written by `directive` alone. sbatch never runs a shell on these lines but
  splits them at whitespace, takes '...' and "..." as grouping, \ as an escape and an unquoted
  # as a comment, and stops reading directives at the first line that is neither blank nor a
  comment (SchedMD/slurm, src/sbatch/opt.c: _opt_batch_script, get_argument). So names,
  partitions, accounts, constraints, mail addresses and times must be of their option's safe
  alphabet and are written bare (hpml.slurm.profiles.check_sbatch_value); the one path,
  --output, is double-quoted when it holds whitespace, a quote or #, with " written \", its %
  written %% (sbatch's filename pattern: %% is a literal %), and refused if it holds a backslash
  (a \ anywhere turns every %-pattern of the name off) or 'hetjob'/'packjob' (sbatch up to 20.11
  split the job there).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hpml.core.config import Config, ConfigError
from hpml.slurm.profiles import (
    HETJOB,
    ClusterProfile,
    check_env_name,
    check_profile,
    check_sbatch_value,
    check_text,
    show_value,
)
from hpml.slurm.templates import jobs_dir, repository

BLOCK = re.compile(r"# >>> profile\n.*?# <<< profile\n", re.S)
SOURCE_ENV = re.compile(r'^source "\$\{HPML_HOME\}/jobs/hpml-env.sh"\n', re.M)


_BARE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")  # needs no quotes in bash


def shell_value(value: str, what: str) -> str:
    r"""The one quoting of job scripts: `value` as a single bash word that means exactly `value`.

    Single quotes, with ' written '\'' (close, escaped quote, reopen): inside them bash expands
    nothing, so $(...), `...`, $VAR, ! and \ stay text. Control characters are refused.
    """
    check_text(value, what, limit=None)
    if _BARE.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def directive(option: str, value: str | None = None) -> str:
    """One `#SBATCH` line of a value from its option's safe alphabet (written bare)."""
    if value is None:
        return f"#SBATCH {option}"
    return f"#SBATCH {option}={check_sbatch_value(option, value)}"


def sbatch_path(path: str | Path, what: str = "#SBATCH --output") -> str:
    """A directory for sbatch's --output as sbatch must read it: its % written %%."""
    text = str(path)
    check_text(text, what)
    if "\\" in text:
        raise ConfigError(
            f"{what}: {show_value(text)} holds a backslash: SLURM then expands no %-pattern of the log's name "
            "(sbatch's filename pattern), so the log would not be where hpml looks"
        )
    if HETJOB.search(text):
        raise ConfigError(
            f"{what}: {show_value(text)} holds 'hetjob' or 'packjob': sbatch (up to 20.11) splits a job there"
        )
    return text.replace("%", "%%")


def output_directive(log_dir: str | Path, log_name: str) -> str:
    """`#SBATCH --output=DIR/NAME`; double-quoted where DIR holds whitespace, a quote or #."""
    value = f"{sbatch_path(log_dir)}/{log_name}"
    if any(ch.isspace() or ch in "\"'#" for ch in value):
        value = '"' + value.replace('"', '\\"') + '"'  # inside "...", sbatch takes \" as a "
    return f"#SBATCH --output={value}"


def directives(stage: str, profile: ClusterProfile, log_dir: Path, array: str | None = None) -> list[str]:
    p = profile
    limit = p.time["train" if stage == "sweep" else stage]
    log_name = "%x-%A_%a.out" if array else "%x-%j.out"
    lines = [directive("--job-name", f"hpml-{stage}"), directive("--time", limit), output_directive(log_dir, log_name)]
    if p.account:
        lines.append(directive("--account", p.account))
    if stage == "preprocess":
        lines += [
            directive("--partition", p.cpu_partition),
            directive("--ntasks", str(p.preprocess_tasks)),
            directive("--cpus-per-task", str(p.cpus_per_preprocess_task)),
        ]
    else:
        lines += [
            directive("--partition", p.partition),
            directive("--nodes", str(p.nodes)),
            directive("--ntasks-per-node", str(p.ranks_per_node)),
            directive("--cpus-per-task", str(p.cpus_per_task)),
        ]
        if p.gpus_per_node:  # pin by local rank in hpml; --gpus-per-task breaks NCCL peer access
            lines.append(directive("--gpus-per-node", str(p.gpus_per_node)))
        if p.exclusive_nodes:  # a multi-node job must not share its nodes' network and memory bandwidth
            lines.append(directive("--exclusive"))
    if p.constraint:
        lines.append(directive("--constraint", p.constraint))
    if stage in ("train", "sweep"):
        lines += [  # one log across requeues
            directive("--signal", f"B:USR1@{p.signal_lead_s}"),
            directive("--requeue"),
            directive("--open-mode", "append"),
        ]
    if array:
        lines.append(directive("--array", array))
    if p.mail_user:
        lines.append(directive("--mail-user", p.mail_user))
    if p.mail_type:
        lines.append(directive("--mail-type", p.mail_type))
    return lines


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


def bind_list(binds: list[str]) -> str:
    """Apptainer's --bind list: `src[:dest[:opts]]` joined by commas, so no path may hold either."""
    for path in binds:
        bad = sorted({ch for ch in path if ch in ",:"})
        if bad:
            raise ConfigError(
                f"container bind {show_value(path)}: holds {' and '.join(repr(b) for b in bad)}, which separate "
                "Apptainer's --bind list (src[:dest[:options]],...): rename it, or run without a container"
            )
    return ",".join(binds)


def variables(stage: str, profile: ClusterProfile, binds: list[str]) -> dict[str, str]:
    p = profile
    repo = repository()
    values = {
        "HPML_HOME": str(repo or ""),
        "HPML_VENV": sys.prefix if sys.prefix != sys.base_prefix else "",  # the environment hpml runs from
        "HPML_MODULES": " ".join(p.modules),
        "HPML_CONTAINER": p.container or "",
        "HPML_BINDS": bind_list(binds) if p.container else "",
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
    check_profile(profile, f"cluster profile {profile.name!r}")  # again: it may not come from a file
    block = [*directives(stage, profile, log_dir, array), f"# rendered by `hpml submit` for profile '{profile.name}'"]
    # Nothing expands: the staging path reaches each rank as `$TMPDIR`, and each expands its own.
    block += [f"{key}={shell_value(value, key)}" for key, value in variables(stage, profile, list(binds)).items()]
    for section in ("network", "env"):
        for key, value in getattr(profile, section).items():
            check_env_name(key, f"cluster profile {section}")
            block.append(f"export {key}={shell_value(value, f'{section}.{key}')}")
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
