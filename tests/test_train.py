"""`hpml train` under real `mpirun` + Horovod: learning, identical ranks, resume, preemption."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from conftest import MPI_ENV, REPO, hpml

from hpml.preemption import REQUEUE_EXIT_CODE
from preprocess.covidx import build
from preprocess.synth import synth

DEMO = REPO / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    synth(root / "raw", per_class=120, seed=11)
    build(sorted((root / "raw").iterdir()), root / "split")
    hpml("preprocess", "--config", DEMO, "--split-dir", root / "split", "--out", root / "shards", np=2)
    return root / "shards"


def train_cmd(shards, run_dir, *overrides):
    cmd = ["mpirun", "-np", "2", sys.executable, "-m", "hpml.cli", "train", "--config", DEMO,
           "--shards", shards, "--run-dir", run_dir]  # fmt: skip
    for item in overrides:
        cmd += ["--set", item]
    return list(map(str, cmd))


def start(cmd):
    return subprocess.Popen(cmd, env={**os.environ, **MPI_ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def run(cmd, timeout=600):
    proc = subprocess.run(cmd, env={**os.environ, **MPI_ENV}, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def history(run_dir):
    with open(run_dir / "history.csv") as fh:
        return list(csv.DictReader(fh))


def digests(log):
    return re.findall(r"\[(\d)/2\] INFO hpml.train: training done; weights sha256 (\w+)", log)


def optimizer_iterations(run_dir):
    metas = sorted((run_dir / "checkpoints").glob("ckpt-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    newest = str(metas[-1]).removesuffix(".json")
    reader = tf.train.load_checkpoint(newest)
    iterations = int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
    return iterations, json.loads(metas[-1].read_text())


def wait_for(predicate, job, timeout=300):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert job.poll() is None, f"job ended early:\n{job.stdout.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_two_ranks_learn_the_pattern_with_identical_weights(shards, tmp_path):
    run_dir = tmp_path / "run"
    code, log = run(train_cmd(shards, run_dir, "train.epochs=8", "train.steps_per_epoch=30"))
    assert code == 0, log
    (r0, d0), (r1, d1) = sorted(digests(log))
    assert (r0, r1) == ("0", "1") and d0 == d1  # the two ranks end with the same weights
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(8))
    assert max(float(r["val_accuracy"]) for r in rows) >= 0.8  # chance is 0.33
    for name in ("config.yaml", "versions.json", "checkpoints/best.h5"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert "horovod" in json.loads((run_dir / "versions.json").read_text())["packages"]


def test_kill_during_epoch_two_then_resume(shards, tmp_path):
    run_dir = tmp_path / "run"
    cmd = train_cmd(shards, run_dir, "train.epochs=3", "train.steps_per_epoch=40", "train.plateau_patience=1")
    job = start(cmd)
    wait_for(lambda: (run_dir / "checkpoints" / "ckpt-40.json").exists(), job)
    time.sleep(1.0)  # well into epoch 2
    ranks = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
    os.kill(int(ranks[0]), signal.SIGKILL)
    job.communicate(timeout=120)
    assert job.returncode != 0
    lr_after_epoch_1 = float(history(run_dir)[0]["lr"])
    code, log = run(cmd)
    assert code == 0, log
    assert "resumed from ckpt-40: epoch 1, step 0" in log
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1, 2]
    iterations, meta = optimizer_iterations(run_dir)
    assert iterations == meta["global_step"] == 3 * 40  # optimizer state carried over, not restarted
    assert float(history(run_dir)[1]["lr"]) <= lr_after_epoch_1  # LR continued (plateau may only lower it)


def test_sigusr1_to_one_rank_checkpoints_and_requeues_then_finishes(shards, tmp_path):
    run_dir = tmp_path / "run"
    cmd = train_cmd(shards, run_dir, "train.epochs=2", "train.steps_per_epoch=200")
    job = start(cmd)
    wait_for(lambda: (run_dir / "versions.json").exists(), job)
    time.sleep(6)  # training is under way
    ranks = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
    os.kill(int(ranks[-1]), signal.SIGUSR1)  # only one rank hears it, as can happen under SLURM
    out, _ = job.communicate(timeout=120)  # and neither hangs
    assert job.returncode == REQUEUE_EXIT_CODE, out
    metas = sorted((run_dir / "checkpoints").glob("ckpt-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    meta = json.loads(metas[-1].read_text())
    assert "received SIGUSR1" in out, out
    assert f"preempted at epoch {meta['epoch']} step {meta['step_in_epoch']}: checkpoint saved" in out
    assert 0 < meta["step_in_epoch"] < 200  # mid-epoch: the data position is part of the state
    assert (run_dir / "PREEMPTED").is_file()  # the job script's second witness besides exit 75
    code, log = run(cmd)
    assert code == 0, log
    assert f"resumed from ckpt-{meta['global_step']}: epoch {meta['epoch']}, step {meta['step_in_epoch']}" in log
    assert not (run_dir / "PREEMPTED").exists()
    iterations, final = optimizer_iterations(run_dir)
    assert iterations == final["global_step"] == 2 * 200  # exactly the configured steps, none lost or repeated
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1]


def test_corrupt_newest_checkpoint_falls_back_to_previous(shards, tmp_path):
    run_dir = tmp_path / "run"
    code, log = run(train_cmd(shards, run_dir, "train.epochs=2", "train.steps_per_epoch=5"))
    assert code == 0, log
    newest = run_dir / "checkpoints" / "ckpt-10.data-00000-of-00001"
    newest.write_bytes(newest.read_bytes()[:100])  # a partial write
    code, log = run(train_cmd(shards, run_dir, "train.epochs=3", "train.steps_per_epoch=5"))
    assert code == 0, log
    assert "checkpoint ckpt-10 is unreadable" in log and "resumed from ckpt-5: epoch 1, step 0" in log
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1, 2]


def test_missing_shards_fail_cleanly(tmp_path):
    code, log = run(train_cmd(tmp_path / "none", tmp_path / "run"), timeout=300)
    assert code == 2 and "manifest.json: not found" in log


def test_horovodrun_with_gloo(shards, tmp_path):
    """The same command under horovodrun's Gloo controller instead of mpirun."""
    import shutil

    horovodrun = shutil.which("horovodrun") or str(REPO / ".venv" / "bin" / "horovodrun")
    cmd = [horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m", "hpml.cli", "train",
           "--config", str(DEMO), "--shards", str(shards), "--run-dir", str(tmp_path / "run"),
           "--set", "train.epochs=1", "--set", "train.steps_per_epoch=5"]  # fmt: skip
    code, log = run(cmd)
    assert code == 0, log
    assert "2 ranks x batch 16" in log and len(set(d for _, d in digests(log))) == 1
