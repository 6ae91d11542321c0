"""Checkpoints on disk: newest by write order, pruning, failed writes, incompatible ones."""

import json

import pytest
import tensorflow as tf

from hpml.core.config import load_config
from hpml.models.build import build_model
from hpml.train import checkpoints
from hpml.train.checkpoints import CheckpointWriteError, IncompatibleCheckpoint, TrainState

CFG = load_config(None, ["model.backbone=tiny_cnn", "model.head=gap", "data.image_size=16"])


def model():
    m = build_model(CFG.model, 16)
    m.compile(tf.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return m


def test_newest_is_the_last_written_and_pruning_keeps_it(tmp_path):
    m, fp = model(), None
    fp = checkpoints.fingerprint(CFG, m)
    for step in (100, 90, 80):  # left by a longer earlier attempt
        checkpoints.save(m, tmp_path, TrainState(global_step=step), fp)
    written = checkpoints.save(m, tmp_path, TrainState(global_step=5, epoch=1), fp)
    names = [p.name for p, _ in checkpoints.complete(tmp_path)]
    assert names == ["ckpt-5", "ckpt-80", "ckpt-90"]  # ckpt-100, the oldest write, pruned
    assert written.name == "ckpt-5"
    state, prefix = checkpoints.restore(model(), tmp_path, fp)
    assert prefix.name == "ckpt-5" and state.epoch == 1


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    m = model()
    fp = checkpoints.fingerprint(CFG, m)
    checkpoints.save(m, tmp_path, TrainState(global_step=10), fp)
    monkeypatch.setenv("HPML_FAULT", "checkpoint_write:0:enospc")
    with pytest.raises(
        CheckpointWriteError, match=r"No space left on device.*the previous checkpoint ckpt-10 is intact"
    ):
        checkpoints.save(m, tmp_path, TrainState(global_step=20), fp)
    monkeypatch.delenv("HPML_FAULT")
    assert not list(tmp_path.glob("ckpt-20*"))  # no partial files
    assert checkpoints.restore(model(), tmp_path, fp)[1].name == "ckpt-10"


def test_another_setup_is_refused_not_treated_as_damage(tmp_path):
    m = model()
    checkpoints.save(m, tmp_path, TrainState(global_step=3), checkpoints.fingerprint(CFG, m))
    other = load_config(
        None, ["model.backbone=tiny_cnn", "model.head=gap", "data.image_size=16", "train.optimizer=sgd"]
    )
    m2 = build_model(other.model, 16)
    m2.compile(tf.keras.optimizers.SGD(1e-3), "sparse_categorical_crossentropy")
    m2.optimizer.build(m2.trainable_variables)
    with pytest.raises(IncompatibleCheckpoint, match=r"optimizer 'adam\+amsgrad' -> 'sgd'"):
        checkpoints.restore(m2, tmp_path, checkpoints.fingerprint(other, m2))


def test_checkpoints_from_before_fingerprints_still_resume(tmp_path):
    m = model()
    checkpoints.save(m, tmp_path, TrainState(global_step=7, epoch=2), checkpoints.fingerprint(CFG, m))
    meta = tmp_path / "ckpt-7.json"
    meta.write_text(json.dumps(json.loads(meta.read_text())["state"]))  # the old format: the state alone
    state, prefix = checkpoints.restore(model(), tmp_path, checkpoints.fingerprint(CFG, m))
    assert (prefix.name, state.epoch) == ("ckpt-7", 2)
