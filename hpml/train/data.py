"""tf.data from the shards: the training stream and the evaluation stream.

Training follows hpml.train.epoch_plan: each rank reads its exact part of every class stream as
record spans -> keeps the stream's classes -> shuffles (seeded per epoch and rank) -> batches
of the stream's share (COVID-Net's fixed COVID-19 share per batch when balancing) -> the
batches of the streams side by side -> (skip what a resumed run already trained on, before
any decode) -> decode + augment -> prefetch. Every rank gets exactly `plan.steps` batches, and
the same epoch asked twice gives the same stream, so a resumed run continues at the same
record. Augmentation uses stateless ops keyed by the record's position: it replays too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from hpml.core.config import CLASSES, Config
from hpml.core.world import World
from hpml.shards.schema import compression_of, parse_fn
from hpml.shards.shardset import ShardSet
from hpml.train.augment import augment
from hpml.train.epoch_plan import TrainPlan, epoch_seed

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


def decode_record_image(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded record image -> uint8 [size, size, 1], the model's input.

    Batches stay 1-channel uint8 (a quarter of float32, a third of RGB): the cast to [0, 1]
    and the one gray -> 3-channel replication happen inside the model (hpml.models.model_input),
    on the accelerator, for training, evaluation and prediction alike.
    """
    img = tf.io.decode_image(image_bytes, channels=1, expand_animations=False)  # JPEG or PNG
    return tf.ensure_shape(img, [size, size, 1])


def _records(files: list[str]) -> tf.data.Dataset:
    compression = compression_of(files[0]) if files else ""
    return tf.data.TFRecordDataset(files, compression_type=compression, num_parallel_reads=None)


def train_shard_labels(shards: ShardSet) -> list[tuple[str, str]]:
    """(shard path, class digit per record) for every train shard, from the manifest.

    Manifests written before per-record labels existed are read from the shards themselves.
    """
    entries = [s for s in shards.entries("train") if s["count"]]
    if any("labels" not in s for s in entries):
        log.warning(
            "%s has no per-record labels (made by an older hpml): reading them from the shards; "
            "rerun `hpml preprocess` to skip this",
            shards.manifest_path,
        )
    return [(str(shards.root / s["file"]), s.get("labels") or _read_labels(shards.root / s["file"])) for s in entries]


def _read_labels(path: Path) -> str:
    spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(str(path), compression_type=compression_of(str(path)))
    ds = ds.map(lambda r: tf.io.parse_single_example(r, spec)["label"]).batch(4096)
    return "".join(str(int(v)) for batch in ds for v in batch.numpy())


def _read_spans(spans, compression: str) -> tf.data.Dataset:
    files, starts, lengths = zip(*((s.file, s.start, s.stop - s.start) for s in spans), strict=True)
    ds = tf.data.Dataset.from_tensor_slices((list(files), np.array(starts, np.int64), np.array(lengths, np.int64)))
    return ds.interleave(
        lambda f, start, n: tf.data.TFRecordDataset(f, compression_type=compression).skip(start).take(n),
        cycle_length=min(4, len(spans)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


def train_records(plan: TrainPlan, cfg: Config, epoch: int) -> tf.data.Dataset:
    """This rank's `plan.steps` batches of epoch `epoch` as (encoded images, labels), undecoded."""
    t = cfg.train
    rank_seed = epoch_seed(t.seed, epoch) * 1_009 + plan.world.rank
    parse = parse_fn()
    parts = []
    streams = plan.streams(epoch)
    for i, stream in enumerate(streams):
        ds = _read_spans(stream.spans, compression_of(stream.spans[0].file))
        ds = ds.map(lambda r: (lambda x: (x["image"], x["label"]))(parse(r)), num_parallel_calls=AUTOTUNE)
        if len(stream.classes) < len(CLASSES):
            keep = tf.constant(sorted(stream.classes), tf.int64)
            ds = ds.filter(lambda _, y, keep=keep: tf.reduce_any(tf.equal(y, keep)))
        # A stream that must give more than its part (the COVID-19 share, or a fixed
        # steps_per_epoch) wraps around, reshuffled; the part is known to be non-empty.
        ds = ds.shuffle(min(stream.count, t.shuffle_buffer), seed=rank_seed + i, reshuffle_each_iteration=True)
        parts.append(ds.repeat())
    if len(parts) == 1:
        return parts[0].batch(t.batch_size, drop_remainder=True).take(plan.steps)
    if any(s.rotating for s in streams):
        return _rotating_batches(parts, streams, plan, t.batch_size)
    parts = [part.batch(stream.per_batch, drop_remainder=True) for part, stream in zip(parts, streams, strict=True)]
    batches = tf.data.Dataset.zip(tuple(parts)).map(
        lambda *b: (tf.concat([x for x, _ in b], 0), tf.concat([y for _, y in b], 0))
    )
    return batches.take(plan.steps)


def _rotating_batches(parts: list, streams: list, plan: TrainPlan, batch: int) -> tf.data.Dataset:
    """Batches whose COVID-19 share changes with the step (a global share that does not divide
    over the ranks; hpml.train.epoch_plan.Stream.share): per step, the non-COVID records, then the
    COVID-19 ones, drawn by a choice sequence that is a function of the step alone, so a resumed
    run replays it."""
    covid = next(s for s in streams if not s.drives_epoch)
    rank, size = plan.world.rank, plan.world.size

    def choices(step):
        extra = tf.cast((rank + step) % size < covid.rotating, tf.int64)
        n = covid.per_batch + extra
        return tf.data.Dataset.from_tensor_slices(
            tf.concat([tf.zeros([batch - n], tf.int64), tf.ones([n], tf.int64)], 0)
        )

    order = tf.data.Dataset.range(plan.steps).flat_map(choices)
    driving = next(i for i, s in enumerate(streams) if s.drives_epoch)
    ds = tf.data.Dataset.choose_from_datasets([parts[driving], parts[1 - driving]], order)
    return ds.batch(batch, drop_remainder=True).take(plan.steps)


def train_dataset(plan: TrainPlan, cfg: Config, epoch: int, start_step: int) -> tf.data.Dataset:
    """Batches `start_step..plan.steps` of `epoch` for this rank, decoded and augmented."""
    t, size = cfg.train, cfg.data.image_size
    aug = t.augment
    augmenting = aug.rotation or aug.shift or aug.zoom or aug.flip or aug.brightness
    rank_seed = epoch_seed(t.seed, epoch) * 1_009 + plan.world.rank
    # Skip what a preempted run already trained on before paying for any decode.
    ds = train_records(plan, cfg, epoch).skip(start_step).unbatch().enumerate(start=start_step * t.batch_size)

    def prepare(i, x):
        img = decode_record_image(x[0], size)
        if augmenting:
            img = augment(img, aug, tf.stack([tf.constant(rank_seed, tf.int64), i]))
        return img, x[1]

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(t.batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def rank_files(shards: ShardSet, split: str, world: World | None) -> list[str]:
    """The split's shard files this rank evaluates (all of them without a `world`)."""
    files = shards.files(split)
    return files if world is None else files[world.rank :: world.size]


def eval_dataset(
    shards: ShardSet, split: str, cfg: Config, batch_size: int, world: World | None = None, with_meta: bool = False
) -> tf.data.Dataset:
    """Every record of `split` once, in manifest order (only this rank's files if `world`)."""
    files = rank_files(shards, split, world)
    parse = parse_fn()
    size = cfg.data.image_size

    def prepare(raw):
        x = parse(raw)
        image = decode_record_image(x["image"], size)
        if with_meta:
            return image, x["label"], {k: x[k] for k in ("filename", "patient", "source")}
        return image, x["label"]

    return _records(files).map(prepare, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)
