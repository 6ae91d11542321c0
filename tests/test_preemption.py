"""Preemption signals that arrive early: before TensorFlow is even imported.

SLURM's warning can come at any moment of a job, including while a rank is still starting
(importing TensorFlow, staging, building the model). The handler must already be there: the
default action of SIGUSR1 is to terminate the process.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import MPI_ENV, REPO, hpml

from hpml.core.runfiles import RunDir
from hpml.train.preemption import REQUEUE_EXIT_CODE
from preprocess.covidx.build import build
from preprocess.synth.corpus import synth

DEMO = REPO / "configs" / "demo.yaml"
USR1_BIT = 1 << (10 - 1)  # SIGUSR1 = 10; /proc/PID/status SigCgt is a mask of caught signals


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("preempt-data")
    synth(root / "raw", per_class=20, seed=5)
    build(sorted((root / "raw").iterdir()), root / "split")
    hpml("preprocess", "--config", DEMO, "--split-dir", root / "split", "--out", root / "shards", np=2)
    return root / "shards"


def caught_mask(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def test_usr1_before_tensorflow_is_loaded_is_kept_and_checkpointed(shards, tmp_path):
    run = tmp_path / "run"
    cmd = [
        "mpirun",
        "-np",
        "2",
        "-x",
        "SLURM_JOB_ID=4242",
        "-x",
        "SLURM_RESTART_COUNT=2",
        sys.executable,
        "-m",
        "hpml.cli",
        "train",
        "--config",
        str(DEMO),
        "--shards",
        str(shards),
        "--run-dir",
        str(run),
        "--set",
        "train.epochs=2",
        "--set",
        "train.steps_per_epoch=50",
    ]
    job = subprocess.Popen(
        cmd, env={**os.environ, **MPI_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    rank = None
    while rank is None:  # the first rank whose handler is in place
        assert time.monotonic() < deadline and job.poll() is None, "no rank installed a handler"
        for pid in subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split():
            try:
                if caught_mask(int(pid)) & USR1_BIT:
                    rank = int(pid)
                    break
            except FileNotFoundError:
                pass
        time.sleep(0.02)
    maps = open(f"/proc/{rank}/maps").read()
    os.kill(rank, 10)
    assert "libtensorflow" not in maps, "the handler came only after TensorFlow was loaded"
    out, _ = job.communicate(timeout=600)
    assert job.returncode == REQUEUE_EXIT_CODE, out
    assert "received SIGUSR1" in out and "preempted at epoch 0 step 1: checkpoint saved" in out, out
    assert json.loads((run / "checkpoints" / "ckpt-1.json").read_text())["state"]["global_step"] == 1
    assert RunDir(run).marker.read_text().splitlines()[0] == "job=4242 restart=2"  # what the job script compares


def test_check_interval_keeps_the_checks_under_budget_and_within_the_time_bound():
    from hpml.train.preemption import CHECK_BUDGET, MAX_CHECK_INTERVAL_S, check_every

    # A 20 ms GPU step and a 3 ms check: every 30 steps is 3 ms per 600 ms = 0.5 %.
    assert check_every(0.020, 0.003, 1) == 30
    assert check_every(0.020, 0.003, 4) == 32  # whole optimizer updates only
    for step_s, check_s, unit in [(0.02, 0.003, 1), (0.005, 0.002, 2), (0.3, 0.001, 1), (1.0, 0.0001, 3)]:
        k = check_every(step_s, check_s, unit)
        assert k % unit == 0 and check_s / (k * step_s) <= CHECK_BUDGET
    # Slow steps, a slow check: the time bound wins (a stop must come well within SLURM's warning).
    assert check_every(10.0, 1.0, 1) * 10.0 <= MAX_CHECK_INTERVAL_S


def test_the_training_callbacks_never_force_a_host_sync_per_step():
    import tensorflow as tf

    from hpml.core.world import World
    from hpml.train.callbacks import StepProgress, Warmup, training_callbacks
    from hpml.train.checkpoints import TrainState
    from hpml.train.preemption import Preemption
    from hpml.train.status_writer import StatusWriter

    status = StatusWriter(Path(tempfile.mkdtemp()), World(), TrainState(), 1, 10, 8)
    callbacks = training_callbacks(Preemption(), Warmup(1e-3, 2e-3, 10, 0), StepProgress(World()), [status.callback()])
    listed = tf.keras.callbacks.CallbackList(callbacks)
    # Keras converts a step's logs to numpy (waiting for the device) unless every callback with
    # batch hooks takes tensors.
    assert listed._batch_hooks_support_tf_logs, [type(c).__name__ for c in callbacks]


def test_bench_loop_times_both_loops_and_reports_the_agreed_check_interval(tmp_path):
    from shardmaker import write_shards
    from trainutil import SMALL

    write_shards(
        tmp_path / "shards", {"train-00000-00000.tfrecord": [0, 1, 2] * 40, "val-00000-00000.tfrecord": [0, 1, 2]}
    )
    sets = [a for item in SMALL if not item.startswith("train.stop_check_steps") for a in ("--set", item)]
    proc = hpml(
        "bench",
        "loop",
        "--config",
        DEMO,
        "--shards",
        tmp_path / "shards",
        "--steps",
        "14",
        "--rounds",
        "2",
        "--json",
        tmp_path / "loop.json",
        *sets,
        "--set",
        "train.accumulate_steps=2",
        np=2,
    )
    result = json.loads((tmp_path / "loop.json").read_text())
    assert result["steps_per_fit"] == 14 and result["ranks"] == 2
    assert set(result["steps_per_s"]) == {"bare", "hpml"} and min(result["steps_per_s"].values()) > 0
    assert result["check_every"] % 2 == 0  # agreed by both ranks, whole updates
    assert f"ratio hpml/bare = {result['ratio']:.3f}" in proc.stdout
