"""Running `hpml train` under real mpirun in tests, and reading what it left behind."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import tensorflow as tf
from conftest import MPI_ENV, REPO

DEMO = REPO / "configs" / "demo.yaml"
# Made shards (tests/shardmaker.py) are 16 px and need neither augmentation nor many steps. The
# preemption check every step puts a stop injected at step N exactly at N (tests that exercise the
# calibrated schedule set train.stop_check_steps=null).
SMALL = [
    "data.image_size=16",
    "train.batch_size=4",
    "train.base_batch=4",
    "train.warmup_epochs=0",
    "train.augment.rotation=0",
    "train.augment.shift=0",
    "train.augment.zoom=0",
    "train.augment.flip=false",
    "train.augment.brightness=0",
    "train.stop_check_steps=1",
]


def train_cmd(shards, run_dir, *overrides, np=2, args=()):
    cmd = [sys.executable, "-m", "hpml.cli", "train", "--config", DEMO, "--shards", shards, "--run-dir", run_dir, *args]
    if np:
        cmd = ["mpirun", "-np", str(np), *cmd]
    for item in overrides:
        cmd += ["--set", item]
    return list(map(str, cmd))


def run(cmd, timeout=900, fault: str | None = None, env=None):
    env = {**os.environ, **MPI_ENV, **(env or {})}
    env.pop("HPML_FAULT", None)
    if fault:
        env["HPML_FAULT"] = fault
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv") as fh:
        return list(csv.DictReader(fh))


def digests(log: str) -> dict[str, str]:
    """rank -> sha256 of all its weights (BatchNorm statistics included) at the end."""
    return dict(re.findall(r"\[(\d+)/\d+\] INFO hpml.train.loop: training done; weights sha256 (\w+)", log))


def newest_checkpoint(run_dir: Path) -> tuple[int, dict]:
    """(optimizer iterations, TrainState) of the newest complete checkpoint."""
    from hpml.train.checkpoints import complete

    prefix, meta = complete(run_dir / "checkpoints")[0]
    reader = tf.train.load_checkpoint(str(prefix))
    iterations = int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
    return iterations, meta["state"]


def manifest(shard_dir: Path) -> dict:
    return json.loads((shard_dir / "manifest.json").read_text())


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it, as a dying node would."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        kill_tree(int(child))
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
