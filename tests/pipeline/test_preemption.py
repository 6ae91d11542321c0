"""Preemption signals that arrive early: before TensorFlow is even imported.

SLURM's warning can come at any moment of a job, including while a rank is still starting
(importing TensorFlow, staging, building the model). The handler must already be there: the
default action of SIGUSR1 is to terminate the process.
"""

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import MPI_ENV, REPO, hpml, make_data, sets

from hpml.core.runfiles import RunDir
from hpml.train.preemption import REQUEUE_EXIT_CODE

DEMO = REPO / "configs" / "demo.yaml"
USR1_BIT = 1 << (10 - 1)  # SIGUSR1 = 10; /proc/PID/status SigCgt is a mask of caught signals


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("preempt-data"), per_class=20, seed=5) / "shards"


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


def test_bench_loop_times_both_loops_and_reports_the_agreed_check_interval(tmp_path):
    from shardmaker import write_shards
    from trainutil import SMALL

    write_shards(
        tmp_path / "shards", {"train-00000-00000.tfrecord": [0, 1, 2] * 40, "val-00000-00000.tfrecord": [0, 1, 2]}
    )
    overrides = sets(*(item for item in SMALL if not item.startswith("train.stop_check_steps")))
    budget = ["--min-rounds", "2", "--max-rounds", "4"]
    options = [
        "--steps",
        "14",
        *budget,
        "--json",
        tmp_path / "loop.json",
        *overrides,
        "--set",
        "train.accumulate_steps=2",
    ]
    proc = hpml("bench", "loop", "--config", DEMO, "--shards", tmp_path / "shards", *options, np=2)
    result = json.loads((tmp_path / "loop.json").read_text())
    assert result["steps_per_fit"] == 14 and result["ranks"] == 2 and 2 <= result["rounds"] <= 4
    assert set(result["steps_per_s"]) == {"bare", "hpml"} and min(result["steps_per_s"].values()) > 0
    assert result["check_every"] % 2 == 0  # agreed by both ranks, whole updates
    low, high = result["interval"]
    assert low <= result["ratio"] <= high
    line = f"ratio hpml/bare = {result['ratio']:.3f}  95% CI [{low:.3f}, {high:.3f}] over {result['rounds']} rounds"
    assert line in proc.stdout and result["verdict"] in proc.stdout
