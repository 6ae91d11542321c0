"""Cluster profiles (configs/clusters/*.yaml): where and how the SLURM jobs run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hpml.config import ConfigError, build_dataclass, load_yaml

PROFILES = Path(__file__).resolve().parents[1] / "configs" / "clusters"
STAGES = ("preprocess", "train", "evaluate")


@dataclass
class ClusterProfile:
    name: str = "local"
    partition: str = "debug"  # GPU partition (training, evaluation)
    cpu_partition: str = "debug"  # preprocessing
    account: str | None = None
    gpus_per_node: int = field(default=0, metadata={"min": 0, "max": 16})
    cpus_per_gpu: int = field(default=1, metadata={"min": 1, "max": 512})
    nodes: int = field(default=1, metadata={"min": 1, "max": 4096})
    tasks_per_node: int | None = field(default=None, metadata={"min": 1, "max": 1024})  # default: one per GPU
    preprocess_tasks: int = field(default=2, metadata={"min": 1, "max": 100_000})
    cpus_per_preprocess_task: int = field(default=1, metadata={"min": 1, "max": 512})
    modules: list[str] = field(default_factory=list)
    container: str | None = None
    scratch: str = "/tmp"
    stage: bool = False  # copy shards to `scratch` before training
    launcher: Literal["srun", "mpirun"] = "srun"
    mpi: str = "pmix"
    env: dict[str, str] = field(default_factory=dict)
    time: dict[str, str] = field(
        default_factory=lambda: {"preprocess": "01:00:00", "train": "12:00:00", "evaluate": "01:00:00"}
    )
    signal_lead_s: int = field(default=300, metadata={"min": 10, "max": 86_400})

    @property
    def ranks_per_node(self) -> int:
        return self.tasks_per_node or max(self.gpus_per_node, 1)


def load_profile(name_or_path: str) -> ClusterProfile:
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml")))
        raise ConfigError(f"{path}: no such cluster profile (known: {known})")
    profile = build_dataclass(ClusterProfile, load_yaml(path), str(path))
    missing = [s for s in STAGES if s not in profile.time]
    if missing:
        raise ConfigError(f"{path}: time: needs a limit for {', '.join(missing)}")
    return profile
