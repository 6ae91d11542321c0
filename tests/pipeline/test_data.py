"""The tf.data pipeline: deterministic, resumable mid-epoch, disjoint across ranks; augmentation."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, hpml

from hpml.core.config import AugmentConfig, load_config
from hpml.core.world import World
from hpml.shards.shardset import ShardSet
from hpml.train.augment import augment
from hpml.train.data import eval_dataset, train_dataset, train_shard_labels
from hpml.train.epoch_plan import TrainPlan
from preprocess.covidx.build import build

OFF = AugmentConfig(rotation=0, shift=0, flip=False, brightness=0, zoom=0)


@pytest.fixture(scope="module")
def shards(synth_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    build(sorted(synth_corpus.iterdir()), root / "split")
    hpml(
        "preprocess",
        "--config",
        REPO / "configs/demo.yaml",
        "--split-dir",
        root / "split",
        "--out",
        root / "shards",
        "--set",
        "preprocess.shard_mb=0.01",
        np=1,
    )
    return root / "shards"


def cfg(*overrides):
    return load_config(REPO / "configs/demo.yaml", ["train.batch_size=4", *overrides])


def stream(shards, c, world, epoch, start_step, steps):
    c.train.steps_per_epoch = steps
    plan = TrainPlan(train_shard_labels(ShardSet.open(shards)), c.train, world)
    return train_dataset(plan, c, epoch, start_step)


def batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_stream_is_deterministic_and_resumes_mid_epoch(shards):
    c = cfg()
    full = batches(stream(shards, c, World(), 1, 0, 6))
    again = batches(stream(shards, c, World(), 1, 0, 6))
    tail = batches(stream(shards, c, World(), 1, 4, 6))
    assert len(full) == 6 and len(tail) == 2
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(full, again, strict=True))
    assert all((a[0] == b[0]).all() for a, b in zip(full[4:], tail, strict=True))  # same records, same augmentation
    other_epoch = batches(stream(shards, c, World(), 2, 0, 6))
    assert any((a[1] != b[1]).any() for a, b in zip(full, other_epoch, strict=True))
    x, _ = full[0]
    assert x.dtype == np.uint8 and x.shape == (4, 64, 64, 1)


def test_ranks_read_disjoint_files_and_run_equal_steps(shards):
    c = cfg(
        "train.augment.flip=false",
        "train.augment.rotation=0",
        "train.augment.shift=0",
        "train.augment.zoom=0",
        "train.augment.brightness=0",
    )
    seen = []
    for rank in (0, 1):
        ds = stream(shards, c, World(rank, 2, rank), 0, 0, 3)
        got = batches(ds)
        assert len(got) == 3
        seen.append({x.tobytes() for b in got for x in b[0]})
    assert not seen[0] & seen[1]


def test_eval_stream_counts_every_record_once(shards):
    import json

    manifest = json.loads((shards / "manifest.json").read_text())
    n = manifest["totals"]["val"]["count"]
    shard_set = ShardSet.open(shards)
    assert sum(len(y) for _, y in eval_dataset(shard_set, "val", cfg(), batch_size=3)) == n
    per_rank = [sum(len(y) for _, y in eval_dataset(shard_set, "val", cfg(), 3, World(r, 2, r))) for r in (0, 1)]
    assert sum(per_rank) == n


def test_augmentation_flip_is_exact_off_is_identity_and_seeded():
    img = tf.constant(np.random.default_rng(0).integers(0, 255, (16, 16, 1)).astype(np.uint8))
    flip_only = AugmentConfig(rotation=0, shift=0, flip=True, brightness=0, zoom=0)
    outs = [augment(img, flip_only, tf.constant([1, i], tf.int64)).numpy() for i in range(20)]
    flipped = tf.image.flip_left_right(img).numpy()
    kinds = [(o == img.numpy()).all() * 1 + (o == flipped).all() * 2 for o in outs]
    assert set(kinds) == {1, 2}  # each output is exactly the original or exactly the mirror
    assert (augment(img, OFF, tf.constant([1, 2], tf.int64)).numpy() == img.numpy()).all()
    full = AugmentConfig()
    a = augment(img, full, tf.constant([3, 4], tf.int64)).numpy()
    assert (a == augment(img, full, tf.constant([3, 4], tf.int64)).numpy()).all()
    assert (a != augment(img, full, tf.constant([3, 5], tf.int64)).numpy()).any()


def test_staging_copies_verified_shards_and_repairs_damage(shards, tmp_path):
    import json

    from hpml.core.files import file_sha256
    from hpml.train.staging import stage

    staged = stage(ShardSet.open(shards), tmp_path, World(), ("train", "val"))
    target = staged.root
    assert staged.manifest == ShardSet.open(target).manifest  # the staged set reads like the original
    manifest = json.loads((shards / "manifest.json").read_text())
    wanted = [s for s in manifest["shards"] if s["split"] in ("train", "val")]
    assert sorted(p.name for p in target.glob("*.tfrecord")) == sorted(s["file"] for s in wanted)
    assert all(file_sha256(target / s["file"]) == s["sha256"] for s in wanted)
    damaged = target / wanted[0]["file"]
    damaged.write_bytes(b"garbage")
    stage(ShardSet.open(shards), tmp_path, World(), ("train", "val"))  # a rerun re-copies what no longer matches
    assert file_sha256(damaged) == wanted[0]["sha256"]
    assert stage(ShardSet.open(shards), tmp_path, World(1, 2, 1), ("train",)).root == target  # only local rank 0 copies
