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
from conftest import MPI_ENV, REPO, hpml

from hpml.preemption import MARKER, REQUEUE_EXIT_CODE
from preprocess.covidx import build
from preprocess.synth import synth

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
    cmd = ["mpirun", "-np", "2", "-x", "SLURM_JOB_ID=4242", "-x", "SLURM_RESTART_COUNT=2",
           sys.executable, "-m", "hpml.cli", "train", "--config", str(DEMO), "--shards", str(shards),
           "--run-dir", str(run), "--set", "train.epochs=2", "--set", "train.steps_per_epoch=50"]  # fmt: skip
    job = subprocess.Popen(cmd, env={**os.environ, **MPI_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)  # fmt: skip
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
    assert (run / MARKER).read_text().splitlines()[0] == "job=4242 restart=2"  # what the job script compares
