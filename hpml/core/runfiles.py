"""The names of the files in a run directory, in one place.

Training writes them (rank 0), `hpml status`, `hpml efficiency`, `hpml sweep report`,
evaluation and export read them, often on another machine and in another layer of hpml:
every one of them finds a file through `RunDir`, so a name cannot drift between writer and
reader.

    RUN/config.yaml  versions.json  provenance.jsonl  history.csv  curves.png  status.json  PREEMPTED  .lock
        tensorboard/  checkpoints/{ckpt-*, best.h5, best.json, epochs/epoch-*.h5}  eval/<split>/{..., provenance.jsonl}
        efficiency.json
        slurm/{*.sbatch, config.yaml, submitted.json, usage/, *.out}
    SWEEP/sweep.json  SWEEP/p000/ ... (each point a RUN)
"""

from __future__ import annotations

import os
from pathlib import Path

SWEEP_FILE = "sweep.json"  # SWEEP/sweep.json: the grid and the job array of a sweep
# RUN/, RUN/eval/<split>/ and a shard folder: one provenance record per attempt (hpml.core.provenance)
PROVENANCE = "provenance.jsonl"


class RunDir:
    """A run directory's files by what they hold: `RunDir(run).history`, `RunDir(run).eval("val")`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")  # the resolved config the run trains with
    versions = property(lambda self: self.path / "versions.json")  # the latest attempt's versions (old shape)
    provenance = property(lambda self: self.path / PROVENANCE)  # one record per training attempt, appended
    history = property(lambda self: self.path / "history.csv")  # one row per epoch
    curves = property(lambda self: self.path / "curves.png")
    tensorboard = property(lambda self: self.path / "tensorboard")
    checkpoints = property(lambda self: self.path / "checkpoints")
    best = property(lambda self: self.path / "checkpoints" / "best.h5")  # the best epoch's weights
    best_info = property(lambda self: self.path / "checkpoints" / "best.json")  # which epoch, monitor, value
    epochs = property(lambda self: self.path / "checkpoints" / "epochs")  # per-epoch weights (keep_checkpoints)
    status = property(lambda self: self.path / "status.json")  # where training is, rewritten by rank 0
    marker = property(lambda self: self.path / "PREEMPTED")  # rank 0's word to the job script: requeue me
    lock = property(lambda self: self.path / ".lock")  # one training at a time
    efficiency = property(lambda self: self.path / "efficiency.json")
    slurm = property(lambda self: self.path / "slurm")  # rendered job scripts, their config and logs
    submitted = property(lambda self: self.path / "slurm" / "submitted.json")  # every job id submitted
    usage = property(lambda self: self.path / "slurm" / "usage")  # each rank's own usage record
    mlflow_run_id = property(lambda self: self.path / "mlflow_run_id")  # train.tracker: mlflow: the run to continue

    def eval(self, split: str) -> Path:
        return self.path / "eval" / split
