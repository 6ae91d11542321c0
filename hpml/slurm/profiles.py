"""Cluster profiles (configs/clusters/*.yaml): where and how the SLURM jobs run."""

from __future__ import annotations

import re
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
    limits = {stage: time_seconds(t, f"{where}: time.{stage}") for stage, t in p.time.items()}
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
