"""Resume under real mpirun + Horovod: interrupted runs end exactly where uninterrupted ones do.

Interruptions are injected at exact steps (HPML_FAULT, hpml/core/faults.py), never by timing. The
reference is an uninterrupted run; a run killed or preempted anywhere, then rerun with the same
command, must end with bit-identical weights on every rank and the same learning-rate history
(the plateau cuts the LR during the run, so a lost or wrong LR restore shows).
"""

import json
import os
import re
import subprocess
import time

import pytest
from shardmaker import write_shards
from trainutil import SMALL, digests, history, kill_tree, newest_checkpoint, run, train_cmd

from hpml.core.runfiles import RunDir
from hpml.train.preemption import REQUEUE_EXIT_CODE

pytestmark = pytest.mark.slow  # trains, interrupts and resumes, bit for bit: minutes

LAYOUT = {  # 88 train records: 11 steps of 2 ranks x batch 4
    "train-00000-00000.tfrecord": [0, 1, 2] * 16,
    "train-00001-00000.tfrecord": [1, 0] * 20,
    "val-00000-00000.tfrecord": [0, 1, 2] * 4,
}
STEPS = 11
# The plateau never sees an improvement after epoch 1 (min_delta is huge): the LR halves at the
# end of epochs 2 and 3, so the LR in the checkpoint matters.
PLATEAU = [
    "train.epochs=3",
    "train.plateau_patience=1",
    "train.plateau_min_delta=1e9",
    "train.plateau_factor=0.5",
    "train.plateau_min_lr=0",
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume-shards")
    write_shards(out, LAYOUT)
    return out


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    code, log = run(train_cmd(shards, run_dir, *SMALL, *PLATEAU))
    assert code == 0, log
    found = digests(log)
    assert set(found) == {"0", "1"} and found["0"] == found["1"], log
    rows = history(run_dir)
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.004, 0.004, 0.002])  # 2e-3 x 2 ranks, then halved
    return found["0"], rows


@pytest.mark.parametrize(
    "fault, first_exit, resumed_at",
    [
        ("step@25:1:kill", "nonzero", "resumed from ckpt-22: epoch 2, step 0"),  # killed mid-epoch 3
        ("step@15:1:usr1", REQUEUE_EXIT_CODE, "resumed from ckpt-15: epoch 1, step 4"),  # preempted mid-epoch
        ("step@11:0:usr1", REQUEUE_EXIT_CODE, "resumed from ckpt-11: epoch 0, step 11"),  # on an epoch's last step
    ],
    ids=["sigkill-mid-epoch", "sigusr1-mid-epoch", "sigusr1-last-step"],
)
def test_interrupted_run_ends_exactly_like_an_uninterrupted_one(
    shards, reference, tmp_path, fault, first_exit, resumed_at
):
    run_dir = tmp_path / "run"
    cmd = train_cmd(shards, run_dir, *SMALL, *PLATEAU)
    code, log = run(cmd, fault=fault)
    if first_exit == "nonzero":
        assert code != 0, log
    else:
        assert code == first_exit, log
        assert RunDir(run_dir).marker.is_file() and "checkpoint saved; exit 75" in log
    code, log = run(cmd)  # the same command again
    assert code == 0, log
    assert resumed_at in log
    ours = digests(log)
    want, rows = reference
    assert ours == {"0": want, "1": want}  # bit-identical to the uninterrupted run, on both ranks
    assert [r["lr"] for r in history(run_dir)] == [r["lr"] for r in rows]
    assert [r["val_loss"] for r in history(run_dir)] == [r["val_loss"] for r in rows]
    iterations, state = newest_checkpoint(run_dir)
    assert iterations == state["global_step"] == 3 * STEPS  # no step lost or repeated


def test_rank_0_decides_where_to_resume(shards, tmp_path):
    run_dir = tmp_path / "run"
    code, log = run(train_cmd(shards, run_dir, *SMALL, "train.epochs=2"))
    assert code == 0, log
    three = train_cmd(shards, run_dir, *SMALL, "train.epochs=3")
    # A read error on rank 1 cannot matter: only rank 0 reads, the state is broadcast.
    code, log = run(three, fault="checkpoint_read:1:eio")
    assert code == 0, log
    assert "resumed from ckpt-22: epoch 2, step 0" in log and "unreadable" not in log
    assert len(set(digests(log).values())) == 1
    # A read error on rank 0 sends every rank back to the previous checkpoint, together.
    run_dir2 = tmp_path / "run2"
    code, log = run(train_cmd(shards, run_dir2, *SMALL, "train.epochs=2"))
    assert code == 0, log
    code, log = run(train_cmd(shards, run_dir2, *SMALL, "train.epochs=3"), fault="checkpoint_read@1:0:eio")
    assert code == 0, log
    assert "checkpoint ckpt-22 is unreadable" in log and "resumed from ckpt-11: epoch 1, step 0" in log
    assert len(set(digests(log).values())) == 1 and [r["epoch"] for r in history(run_dir2)] == ["0", "1", "2"]


def test_incompatible_checkpoint_is_refused_and_restart_starts_over(shards, tmp_path):
    run_dir = tmp_path / "run"
    code, log = run(train_cmd(shards, run_dir, *SMALL, "train.epochs=1"))
    assert code == 0, log
    code, log = run(train_cmd(shards, run_dir, *SMALL, "train.epochs=2", "model.head=flatten"))
    assert code == 2, log
    assert "was written for another setup (head 'gap' -> 'flatten'" in log and "--restart" in log
    assert log.count("hpml: error") == 1  # every rank refuses, one reports
    code, log = run(train_cmd(shards, run_dir, *SMALL, "train.epochs=1", "model.head=flatten", args=["--restart"]))
    assert code == 0, log
    assert "--restart: " in log and "resumed from" not in log
    assert len(list(run_dir.glob("checkpoints.before-*"))) == 1 and len(history(run_dir)) == 1


def test_resume_on_another_rank_count_rescales_position_and_lr(shards, tmp_path):
    run_dir = tmp_path / "run"
    code, log = run(train_cmd(shards, run_dir, *SMALL, "train.epochs=1"), fault="step@5:0:usr1")
    assert code == REQUEUE_EXIT_CODE, log
    code, log = run(train_cmd(shards, run_dir, *SMALL, "train.epochs=1", np=1))
    assert code == 0, log
    assert (
        "checkpoint written by 2 rank(s) x batch 4, resumed on 1 x 4: epoch 0 continues after 40 images "
        "(step 5 of 11 -> step 10 of 22); lr 0.004 -> 0.002 (lr_scaling linear)"
    ) in log
    iterations, state = newest_checkpoint(run_dir)
    assert iterations == state["global_step"] == 5 + 12 and state["lr"] == pytest.approx(0.002)


def test_a_second_training_of_the_same_run_is_refused(shards, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    first = subprocess.Popen(
        train_cmd(shards, run_dir, *SMALL, "train.epochs=50"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "config.yaml").exists():  # written after the lock is taken
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        holder = json.loads((run_dir / ".lock").read_text())
        code, log = run(train_cmd(shards, run_dir, *SMALL, "train.epochs=1"), timeout=300)
        assert code == 2, log
        assert f"is being trained by host {holder['host']} pid {holder['pid']}" in log
    finally:
        kill_tree(first.pid)  # a job that dies without cleaning up
        first.wait()
    code, log = run(train_cmd(shards, run_dir, *SMALL, "train.epochs=1"))
    assert code == 0, log
    assert "taking over the stale lock" in log and not (run_dir / ".lock").exists()


def _stops(log: str) -> set[tuple[int, int]]:
    return {(int(e), int(s)) for e, s in re.findall(r"preempted at epoch (\d+) step (\d+)", log)}


@pytest.mark.parametrize("accumulate", [1, 2])
def test_calibrated_stop_checks_stop_every_rank_at_one_agreed_step(shards, tmp_path, accumulate):
    """No collective per step: the ranks check every K steps (agreed after timing the first
    steps) and at epoch ends. A USR1 on rank 1 alone stops both ranks at the first check after it,
    at an optimizer-update boundary, and the run still ends bit-identical to an uninterrupted one.
    Checks fall at steps u, u + 10 and 2u + 10 of the process (u = accumulate), then every K,
    and at each epoch's end (an epoch is 10 steps with accumulate 2, 11 without)."""
    calibrated = [*SMALL, *PLATEAU, "train.stop_check_steps=null", f"train.accumulate_steps={accumulate}"]
    code, log = run(train_cmd(shards, tmp_path / "reference", *calibrated))
    assert code == 0, log
    want = digests(log)
    steps = 11 - 11 % accumulate
    agreed = [int(k) for k in re.findall(r"preemption checks agreed: every (\d+) steps from step (\d+)", log)[0]]
    every, start = agreed
    assert every % accumulate == 0 and start == 2 * accumulate + 10
    checks = {accumulate, accumulate + 10} | set(range(start, 3 * steps + 1, every))
    checks |= {steps * e for e in (1, 2, 3)}
    fault_at = 13  # after the agreement: the stop waits for the next check
    run_dir = tmp_path / "run"
    code, log = run(train_cmd(shards, run_dir, *calibrated), fault=f"step@{fault_at}:1:usr1")
    assert code == REQUEUE_EXIT_CODE, log
    ((epoch, step),) = _stops(log)  # one stop, the same on every rank
    stopped_at = epoch * steps + step
    assert stopped_at == min(c for c in checks if c >= fault_at) and stopped_at % accumulate == 0, (log, checks)
    code, log = run(train_cmd(shards, run_dir, *calibrated))
    assert code == 0, log
    assert digests(log) == want and len(set(want.values())) == 1
