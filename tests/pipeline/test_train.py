"""`hpml train` under real `mpirun` + Horovod on the synthetic corpus: learning, identical ranks,
checkpoint fallback, Gloo. Resume and preemption at exact steps: tests/pipeline/test_train_resume.py."""

import json
import shutil

import pytest
from conftest import REPO, make_data
from trainutil import digests, history, run, train_cmd

pytestmark = pytest.mark.slow  # trains to learn the pattern: minutes


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("train-data"), per_class=120, seed=11) / "shards"


def test_two_ranks_learn_the_pattern_with_identical_weights(shards, tmp_path):
    run_dir = tmp_path / "run"
    code, log = run(train_cmd(shards, run_dir, "train.epochs=8", "train.steps_per_epoch=30"))
    assert code == 0, log
    found = digests(log)
    assert set(found) == {"0", "1"} and found["0"] == found["1"]  # the two ranks end with the same weights
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(8))
    assert max(float(r["val_accuracy"]) for r in rows) >= 0.8  # chance is 0.33
    for name in ("config.yaml", "versions.json", "checkpoints/best.h5"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert "horovod" in json.loads((run_dir / "versions.json").read_text())["packages"]


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
    assert code == 2 and "manifest.json: not found" in log and log.count("hpml: error") == 1


def test_horovodrun_with_gloo(shards, tmp_path):
    """The same command under horovodrun's Gloo controller instead of mpirun."""
    horovodrun = shutil.which("horovodrun") or str(REPO / ".venv" / "bin" / "horovodrun")
    cmd = [
        horovodrun,
        "-np",
        "2",
        "-H",
        "localhost:2",
        "--gloo",
        *train_cmd(shards, tmp_path / "run", np=0),
        "--set",
        "train.epochs=1",
        "--set",
        "train.steps_per_epoch=5",
    ]
    code, log = run(cmd)
    assert code == 0, log
    assert "2 ranks x batch 16" in log and len(set(digests(log).values())) == 1
