"""`hpml train` under real mpirun on inputs that used to hang it, stall it silently or split ranks."""

import sys

import pytest
from conftest import WORKERS
from shardmaker import write_shards
from trainutil import SMALL, digests, history, run, train_cmd

from hpml.train.epoch_plan import COVID

pytestmark = pytest.mark.slow  # one small training per test

# All COVID-19 images in one shard: split by file, one rank would hold none of them.
COVID_IN_ONE_SHARD = {
    "train-00000-00000.tfrecord": [0, 1] * 24,
    "train-00001-00000.tfrecord": [0] * 16 + [COVID] * 8,
    "val-00000-00000.tfrecord": [0, 1, COVID] * 2,
}


def test_covid_percent_with_a_rank_whose_files_hold_no_covid_finishes(tmp_path):
    write_shards(tmp_path / "shards", COVID_IN_ONE_SHARD)
    cmd = train_cmd(tmp_path / "shards", tmp_path / "run", *SMALL, "train.epochs=2", "train.covid_percent=0.3")
    code, log = run(cmd, timeout=600)  # the old pipeline never yielded a batch here: a silent hang
    assert code == 0, log
    assert len(set(digests(log).values())) == 1 and len(history(tmp_path / "run")) == 2


def test_covid_percent_that_cannot_feed_every_rank_stops_at_start(tmp_path):
    layout = {"train-00000-00000.tfrecord": [0] * 40 + [COVID], "val-00000-00000.tfrecord": [0]}
    write_shards(tmp_path / "shards", layout)
    code, log = run(train_cmd(tmp_path / "shards", tmp_path / "run", *SMALL, "train.covid_percent=0.3"), timeout=300)
    assert code == 2, log
    assert "1 COVID-19 record(s) for 2 rank(s): every rank needs at least one" in log
    assert log.count("hpml: error") == 1 and "phase 'plan'" in log


def test_missing_val_split_is_refused_unless_validation_is_off(tmp_path):
    write_shards(tmp_path / "shards", {"train-00000-00000.tfrecord": [0, 1, 2] * 12})
    code, log = run(train_cmd(tmp_path / "shards", tmp_path / "run", *SMALL), timeout=300)
    assert code == 2 and "has no val records" in log and "train.validate: false" in log, log
    code, log = run(train_cmd(tmp_path / "shards", tmp_path / "run", *SMALL, "train.epochs=2", "train.validate=false"))
    assert code == 0, log
    rows = history(tmp_path / "run")
    assert len(rows) == 2 and all(r["val_loss"] == "" for r in rows)
    assert (tmp_path / "run" / "checkpoints" / "best.h5").is_file()


def test_batchnorm_statistics_and_weights_agree_across_ranks(tmp_path):
    """A backbone with BatchNorm: its moving statistics are per-rank unless averaged."""
    write_shards(
        tmp_path / "shards",
        {"train-00000-00000.tfrecord": [0, 1, 2] * 8, "val-00000-00000.tfrecord": [0, 1, 2]},
        size=32,
    )
    sets = [*SMALL, "data.image_size=32", "model.backbone=mobilenetv2", "train.epochs=1", "train.optimizer=sgd"]
    code, log = run(train_cmd(tmp_path / "shards", tmp_path / "run", *sets))
    assert code == 0, log
    found = digests(log)  # over get_weights(): trainable and non-trainable (moving mean/variance)
    assert set(found) == {"0", "1"} and found["0"] == found["1"], log
    assert "mobilenetv2 backbone trains from random weights" in log


def test_dropout_masks_differ_between_ranks_while_weights_agree():
    code, log = run(
        ["mpirun", "-np", "2", sys.executable, "-m", "dropout_probe"], timeout=300, env={"PYTHONPATH": str(WORKERS)}
    )
    assert code == 0, log
    assert "weights equal: True" in log and "dropout outputs equal: False" in log, log


@pytest.mark.parametrize("verify", ["true", "false"])
def test_a_damaged_shard_is_named(tmp_path, verify):
    shards = tmp_path / "shards"
    write_shards(
        shards,
        {
            "train-00000-00000.tfrecord": [0, 1, 2] * 10,
            "train-00001-00000.tfrecord": [0, 1, 2] * 10,
            "val-00000-00000.tfrecord": [0, 1, 2],
        },
    )
    bad = shards / "train-00001-00000.tfrecord"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, as a bad disk or a torn copy leaves
    bad.write_bytes(bytes(data))
    code, log = run(train_cmd(shards, tmp_path / "run", *SMALL, f"data.verify={verify}"), timeout=600)
    assert code == 2, log
    assert str(bad) in log and "hpml shards verify" in log
    if verify == "true":
        assert "checksum differs from the manifest" in log and "phase 'verify'" in log
    else:
        assert "cannot read the shard (DataLossError" in log
