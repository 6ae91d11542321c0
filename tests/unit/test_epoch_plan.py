"""The training stream of every rank, built in one process: coverage, balance, classes, resume.

The shards are laid out as real ones are: source-sorted, of unequal sizes, one class per shard
in places, and the images carry their record ids (tests/shardmaker.py), so each test reads
back exactly which records a rank would train on.
"""

from collections import Counter

import numpy as np
import pytest
from shardmaker import image_id, write_shards

from hpml.core.config import load_config
from hpml.core.world import World
from hpml.shards.shardset import ShardSet
from hpml.train.data import train_dataset, train_shard_labels
from hpml.train.epoch_plan import COVID, TrainDataError, TrainPlan, covid_per_batch

NO_AUG = [
    "train.augment.rotation=0",
    "train.augment.shift=0",
    "train.augment.zoom=0",
    "train.augment.flip=false",
    "train.augment.brightness=0",
]
# Source-sorted shards as preprocessing by source would leave them: 112 train records.
LAYOUT = {
    "train-00000-00000.tfrecord": [0] * 37,
    "train-00000-00001.tfrecord": [1] * 23 + [0] * 2,
    "train-00001-00000.tfrecord": [2] * 5 + [1] * 30 + [0] * 6,
    "train-00001-00001.tfrecord": [2] * 9,
    "val-00000-00000.tfrecord": [0, 1, 2],
}


def config(*sets):
    return load_config(None, ["data.image_size=16", "train.batch_size=4", *NO_AUG, *sets])


def plan_for(shard_dir, cfg, rank, size=2):
    return TrainPlan(train_shard_labels(ShardSet.open(shard_dir)), cfg.train, World(rank, size))


def batches(shard_dir, cfg, rank, epoch, start=0, size=2):
    plan = plan_for(shard_dir, cfg, rank, size)
    return plan, [(images.numpy(), labels.numpy()) for images, labels in train_dataset(plan, cfg, epoch, start)]


def ids(batch_list):
    return [image_id(img) for images, _ in batch_list for img in images]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("made-shards")
    return out, write_shards(out, LAYOUT)


def test_every_record_once_per_epoch_split_evenly_over_ranks(shards):
    shard_dir, labels = shards
    train_ids = {i for i, _ in enumerate(labels) if i < 112}
    cfg = config()
    orders = []
    for epoch in (0, 1):
        seen = {rank: ids(batches(shard_dir, cfg, rank, epoch)[1]) for rank in (0, 1)}
        assert len(seen[0]) == len(seen[1]) == 56  # 14 steps x 4 on each rank
        both = seen[0] + seen[1]
        assert Counter(both).most_common(1)[0][1] == 1  # nothing twice...
        assert set(both) == train_ids  # ...and nothing left out: every train record, once
        orders.append(seen[0])
    assert orders[0] != orders[1]  # a fresh order every epoch


def test_ranks_that_get_uneven_files_still_get_equal_work(shards):
    shard_dir, _ = shards
    for size in (1, 3, 4):
        steps = {plan_for(shard_dir, config(), r, size).steps for r in range(size)}
        assert steps == {112 // size // 4}  # the same everywhere, from the manifest's counts


def test_mid_epoch_resume_replays_exactly_the_rest(shards):
    shard_dir, _ = shards
    cfg = load_config(None, ["data.image_size=16", "train.batch_size=4"])  # with augmentation
    _, full = batches(shard_dir, cfg, 1, epoch=3)
    _, rest = batches(shard_dir, cfg, 1, epoch=3, start=5)
    assert len(rest) == len(full) - 5
    for (a, la), (b, lb) in zip(full[5:], rest, strict=True):
        assert np.array_equal(a, b) and np.array_equal(la, lb)  # same records, same augmentation


def test_covid_share_per_batch_whatever_files_a_rank_gets(shards):
    shard_dir, labels = shards
    cfg = config("train.covid_percent=0.3")
    k = covid_per_batch(4, 0.3)
    assert k == 1  # COVID-Net: max(int(4 * 0.3), 1)
    others = {i for i, c in labels.items() if c != COVID and i < 112}
    seen_others = []
    for rank in (0, 1):
        plan, out = batches(shard_dir, cfg, rank, 0)
        assert plan.steps == (len(others) // 2) // (4 - k)
        for _, y in out:
            assert (y == COVID).sum() == k  # a fixed share in every batch, as COVID-Net
        seen_others += [i for i in ids(out) if labels[i] != COVID]
    assert Counter(seen_others).most_common(1)[0][1] == 1 and set(seen_others) <= others
    assert len(others) - len(seen_others) == len(others) % (2 * (4 - k))  # only the remainder waits


def test_a_rank_whose_files_hold_no_covid_is_still_fed(tmp_path):
    # All COVID-19 images sit in one shard; by file, rank 0 would get none of them.
    layout = {"train-00000-00000.tfrecord": [0, 1] * 20, "train-00001-00000.tfrecord": [0] * 10 + [COVID] * 6}
    labels = write_shards(tmp_path, layout | {"val-00000-00000.tfrecord": [0]})
    cfg = config("train.covid_percent=0.3")
    for rank in (0, 1):
        plan, out = batches(tmp_path, cfg, rank, 0)
        assert plan.steps > 0 and all((y == COVID).sum() == 1 for _, y in out)
        assert {labels[i] for i in ids(out)} >= {COVID}


def test_a_split_that_cannot_feed_every_rank_is_refused_up_front(tmp_path):
    write_shards(tmp_path, {"train-00000-00000.tfrecord": [0] * 30 + [COVID], "val-00000-00000.tfrecord": [0]})
    with pytest.raises(TrainDataError, match=r"1 COVID-19 record\(s\) for 2 rank\(s\): every rank needs at least one"):
        plan_for(tmp_path, config("train.covid_percent=0.3"), 0)
    with pytest.raises(TrainDataError, match=r"31 normal/pneumonia/COVID-19 record\(s\) for 8 rank\(s\)"):
        plan_for(tmp_path, config(), 0, size=8)
    with pytest.raises(TrainDataError, match="every image of a batch would be COVID-19"):
        plan_for(tmp_path, config("train.batch_size=1", "train.covid_percent=0.5"), 0)


def test_manifest_without_labels_reads_them_from_the_shards(shards, tmp_path):
    shard_dir, _ = shards
    write_shards(tmp_path, LAYOUT, labels_in_manifest=False)
    cfg = config("train.covid_percent=0.3")
    assert ids(batches(tmp_path, cfg, 1, 2)[1]) == ids(batches(shard_dir, cfg, 1, 2)[1])
