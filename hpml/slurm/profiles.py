"""Cluster profiles (configs/clusters/*.yaml): where and how the SLURM jobs run.

Every value a profile holds ends up in a job script (hpml.slurm.render), so a profile is checked
for what may reach one when it is loaded: no control characters anywhere, names and #SBATCH
values from a safe alphabet, `env`/`network` keys that are shell variable names. The same checks
run again when a script is rendered (for values from the command line).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hpml.core.config import ConfigError, build_dataclass, load_yaml
from hpml.slurm.templates import profiles_dir

STAGES = ("preprocess", "train", "evaluate")
# Exported before the launch; anything else belongs in `env`.
NETWORK_PREFIXES = ("NCCL_", "PMIX_", "UCX_", "OMPI_MCA_", "FI_")
MAIL_TYPES = {
    "NONE",
    "BEGIN",
    "END",
    "FAIL",
    "REQUEUE",
    "ALL",
    "INVALID_DEPEND",
    "STAGE_OUT",
    "TIME_LIMIT",
    "TIME_LIMIT_90",
    "TIME_LIMIT_80",
    "TIME_LIMIT_50",
    "ARRAY_TASKS",
}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")

# ---- what may reach a job script ------------------------------------------------------------
# Linux's PATH_MAX: no path, and no profile value, needs more; a longer one is a mistake.
MAX_VALUE = 4096
# Unicode's control (Cc: newline, tab, NUL, ESC, NEL), format (Cf: bidi overrides, zero-width
# characters), surrogate (Cs: bytes that were not UTF-8) and line/paragraph separator (Zl, Zp)
# characters: none of them belongs in a job script, and a newline would end an #SBATCH line.
_CONTROL = {"Cc", "Cf", "Cs", "Zl", "Zp"}
_CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\0": "a NUL"}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a shell variable name
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# `module load ${HPML_MODULES}` splits the list at spaces, unquoted: no glob or shell characters.
MODULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+/@-]*")
# sbatch reads an #SBATCH line as words: split at whitespace, '...' and "..." group, \ escapes,
# an unquoted # starts a comment, a word starting with : is fatal (SchedMD/slurm,
# src/sbatch/opt.c: get_argument). Up to 20.11 a line holding "hetjob" or "packjob" anywhere
# split the job in two (later ones only at the start of a word). A value written bare must hold
# none of that; each option takes only its own alphabet.
_SLURM_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
HETJOB = re.compile(r"hetjob|packjob", re.I)
SBATCH_VALUES: dict[str, tuple[re.Pattern[str], str]] = {
    "--job-name": (PROFILE_NAME, "a job name (letters, digits, . _ + -)"),
    "--partition": (
        re.compile(rf"{_SLURM_NAME}(,{_SLURM_NAME})*"),
        "a SLURM partition name (letters, digits, _ . -), or several separated by ','",
    ),
    "--account": (re.compile(_SLURM_NAME), "a SLURM account name (letters, digits, _ . -)"),
    "--qos": (re.compile(_SLURM_NAME), "a SLURM QOS name (letters, digits, _ . -)"),
    "--constraint": (
        re.compile(r"[A-Za-z0-9_.&|*()\[\],:-]+"),
        "a SLURM constraint (feature names joined by & | , [ ] ( ) *N)",
    ),
    "--mail-user": (
        re.compile(r"[A-Za-z0-9._+-]+(@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)?"),
        "a mail address (user@domain, or a user name)",
    ),
    "--mail-type": (re.compile(r"[A-Za-z0-9_]+(,[A-Za-z0-9_]+)*"), "SLURM mail events separated by ','"),
    "--time": (re.compile(r"[0-9][0-9:-]*"), "a SLURM time (minutes, HH:MM:SS or D-HH:MM:SS)"),
}
# Everything else hpml writes bare (numbers, --signal=B:USR1@300, --array=0-3%2).
_SBATCH_PLAIN = (
    re.compile(r"[A-Za-z0-9_.,:@%+=&|*()\[\]/-]+"),
    "letters, digits and _ . , : @ % + = & | * ( ) [ ] / -",
)
# The profile keys that become #SBATCH values.
_DIRECTIVE_KEYS = {
    "partition": "--partition",
    "cpu_partition": "--partition",
    "account": "--account",
    "constraint": "--constraint",
    "mail_user": "--mail-user",
    "mail_type": "--mail-type",
}


def show_value(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...' ({len(value)} characters)"


def _describe_control(ch: str) -> str:
    name = _CONTROL_NAMES.get(ch) or unicodedata.name(ch, "a control character")
    return f"U+{ord(ch):04X} ({name})"


def check_text(value: str, where: str, limit: int | None = MAX_VALUE) -> str:
    """Any value bound for a job script: no control characters, at most `limit` characters."""
    for ch in value:
        if unicodedata.category(ch) in _CONTROL:
            raise ConfigError(
                f"{where}: {show_value(value)} holds {_describe_control(ch)}: "
                "no control character may reach a job script"
            )
    if limit is not None and len(value) > limit:
        raise ConfigError(f"{where}: {show_value(value)} is longer than {limit} characters (PATH_MAX)")
    return value


def check_sbatch_value(option: str, value: str, where: str | None = None) -> str:
    """A value written bare after `#SBATCH OPTION=`: its option's alphabet, nothing sbatch splits."""
    where = where or f"#SBATCH {option}"
    check_text(value, where)
    pattern, says = SBATCH_VALUES.get(option, _SBATCH_PLAIN)
    if not pattern.fullmatch(value):
        raise ConfigError(f"{where}: {show_value(value)} is not {says}")
    if HETJOB.search(value):
        raise ConfigError(
            f"{where}: {show_value(value)} holds 'hetjob' or 'packjob': sbatch (up to 20.11) splits a job there"
        )
    return value


def check_env_name(name: str, where: str) -> str:
    if not ENV_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: {show_value(name)} is not a shell variable name (a letter or _, then letters, digits, _)"
        )
    return name


def _check_script_values(p: ClusterProfile, where: str) -> None:
    """What a profile puts into a job script (hpml.slurm.render), field by field."""
    for f in dataclasses.fields(p):
        value = getattr(p, f.name)
        if isinstance(value, str):
            option = _DIRECTIVE_KEYS.get(f.name)
            check_text(value, f"{where}: {f.name}" + (f" (#SBATCH {option})" if option else ""))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                check_text(item, f"{where}: {f.name}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                check_text(key, f"{where}: {f.name}")
                check_text(item, f"{where}: {f.name}.{key}")
    if not PROFILE_NAME.fullmatch(p.name):
        raise ConfigError(f"{where}: name: {show_value(p.name)} is not a profile name (letters, digits, . _ + -)")
    for key, option in _DIRECTIVE_KEYS.items():
        if getattr(p, key):
            check_sbatch_value(option, getattr(p, key), f"{where}: {key} (#SBATCH {option})")
    for i, module in enumerate(p.modules):
        if not MODULE_NAME.fullmatch(module):
            raise ConfigError(
                f"{where}: modules[{i}]: {show_value(module)} is not a module name (letters, digits, . _ + / @ -; "
                "`module load` gets the list split at spaces)"
            )
    for section in ("network", "env"):
        for key in getattr(p, section):
            check_env_name(key, f"{where}: {section}")


def _range(lo: int, hi: int) -> dict[str, int]:
    return {"min": lo, "max": hi}


@dataclass
class ClusterProfile:
    name: str = "local"
    partition: str = "debug"  # GPU partition (training, evaluation)
    cpu_partition: str = "debug"  # preprocessing
    account: str | None = None
    constraint: str | None = None  # --constraint, e.g. scratch-node (Snellius: node-local $TMPDIR)
    gpus_per_node: int = field(default=0, metadata=_range(0, 16))
    cpus_per_task: int = field(default=1, metadata=_range(1, 512))  # per training/evaluation rank
    nodes: int = field(default=1, metadata=_range(1, 4096))
    tasks_per_node: int | None = field(default=None, metadata=_range(1, 1024))  # default: one per GPU
    exclusive: bool | None = None  # whole nodes; default: only for multi-node jobs
    preprocess_tasks: int = field(default=2, metadata=_range(1, 100_000))
    cpus_per_preprocess_task: int = field(default=1, metadata=_range(1, 512))
    cpu_bind: str | None = "cores"  # srun --cpu-bind
    gpu_bind: str | None = None  # srun --gpu-bind; default: hpml pins one GPU per local rank
    omp_num_threads: int | None = field(default=None, metadata=_range(1, 1024))  # default: cpus_per_task
    tf_intra_op_threads: int | None = field(default=None, metadata=_range(1, 1024))  # default: TF's own
    tf_inter_op_threads: int | None = field(default=None, metadata=_range(1, 1024))
    modules: list[str] = field(default_factory=list)
    container: str | None = None
    scratch: str = "$TMPDIR"  # staging target, expanded by each rank on its own node
    stage: bool = False  # copy shards to `scratch` before training
    launcher: Literal["srun", "mpirun"] = "srun"
    mpi: str = "pmix"
    network: dict[str, str] = field(default_factory=dict)  # NCCL_*, PMIX_*, UCX_*, OMPI_MCA_*, FI_*
    env: dict[str, str] = field(default_factory=dict)
    time: dict[str, str] = field(
        default_factory=lambda: {"preprocess": "01:00:00", "train": "12:00:00", "evaluate": "01:00:00"}
    )
    signal_lead_s: int = field(default=300, metadata=_range(10, 86_400))
    max_restarts: int = field(default=3, metadata=_range(0, 1000))  # requeues after preemption, then stop
    mail_user: str | None = None
    mail_type: str | None = None  # e.g. END,FAIL
    sbu_per_gpu_hour: float | None = None  # cost rate for reports (Snellius: SBU)
    sbu_per_cpu_hour: float | None = None

    @property
    def ranks_per_node(self) -> int:
        return self.tasks_per_node or max(self.gpus_per_node, 1)

    @property
    def exclusive_nodes(self) -> bool:
        return self.nodes > 1 if self.exclusive is None else self.exclusive


def time_seconds(text: str, where: str = "time") -> int:
    """SLURM's --time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> seconds."""
    m = _TIME.match(text.strip())
    if not m:
        raise ConfigError(f"{where}: {text!r} is not a SLURM time (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        return days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if c is not None:
        return a * 3600 + b * 60 + c
    if b is not None:
        return a * 60 + b
    return a * 60


def check_profile(p: ClusterProfile, where: str) -> None:
    missing = [s for s in STAGES if s not in p.time]
    if missing:
        raise ConfigError(f"{where}: time: needs a limit for {', '.join(missing)}")
    _check_script_values(p, where)
    limits = {stage: time_seconds(t, f"{where}: time.{stage}") for stage, t in p.time.items()}
    for stage, t in p.time.items():
        check_sbatch_value("--time", t, f"{where}: time.{stage} (#SBATCH --time)")
    if p.signal_lead_s >= limits["train"]:
        raise ConfigError(
            f"{where}: signal_lead_s: {p.signal_lead_s} s is not shorter than time.train "
            f"({p.time['train']}): the preemption signal would come at once"
        )
    bad = [k for k in p.network if not k.startswith(NETWORK_PREFIXES)]
    if bad:
        raise ConfigError(
            f"{where}: network: {', '.join(bad)}: only {', '.join(NETWORK_PREFIXES)}* settings "
            "belong here (others go to env)"
        )
    if p.mail_type:
        unknown = set(p.mail_type.upper().split(",")) - MAIL_TYPES
        if unknown:
            raise ConfigError(
                f"{where}: mail_type: unknown {', '.join(sorted(unknown))} "
                f"(SLURM knows {', '.join(sorted(MAIL_TYPES))})"
            )
    if p.mail_type and not p.mail_user:
        raise ConfigError(f"{where}: mail_type needs mail_user")


def load_profile(name_or_path: str | Path) -> ClusterProfile:
    path = Path(name_or_path)
    if not path.suffix:
        path = profiles_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in profiles_dir().glob("*.yaml")))
        raise ConfigError(f"{path}: no such cluster profile (known: {known})")
    profile = build_dataclass(ClusterProfile, load_yaml(path), str(path))
    check_profile(profile, str(path))
    return profile
