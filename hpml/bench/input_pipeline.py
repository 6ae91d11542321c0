"""`hpml bench input`: images/s a training step can be fed, measured in one run.

(a) the seed's loader: cv2.imread of the original full-size file, resize, float (HPML's
    data.py, one process), without and with the Keras ImageDataGenerator augmentation;
(b) the hpml tf.data pipeline from the shards (hpml.train.data, the epoch plan of one rank),
    with and without augmentation;
(c) a bare loop decoding the shard JPEGs with OpenCV, one core.
Each round measures all five back to back; rounds repeat until every ratio's 95 % interval
judges its target (hpml.bench.rounds).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import replace

import cv2
import numpy as np
import tensorflow as tf

from hpml.bench.rounds import Budget, until_decided
from hpml.core.config import AugmentConfig, Config
from hpml.core.world import World
from hpml.shards.shardset import ShardSet
from hpml.train.data import train_dataset, train_shard_labels
from hpml.train.epoch_plan import TrainPlan

OFF = AugmentConfig(rotation=0.0, shift=0.0, flip=False, brightness=0.0, zoom=0.0)
TARGETS = {"(b, aug off)/(a, no aug)": 20.0, "(b, aug on)/(a, aug)": 20.0, "(b, aug off)/(c)": 0.6}


def seed_loader(paths: list[str], size: int, aug: AugmentConfig | None = None) -> float:
    """HPML's loader; with `aug`, plus the Keras ImageDataGenerator transform it trained with."""
    generator = None
    if aug is not None:
        generator = tf.keras.preprocessing.image.ImageDataGenerator(
            rotation_range=aug.rotation,
            width_shift_range=aug.shift,
            height_shift_range=aug.shift,
            horizontal_flip=aug.flip,
            brightness_range=(1 - aug.brightness, 1 + aug.brightness),
            zoom_range=aug.zoom,
            fill_mode="constant",
        )
    start = time.perf_counter()
    done = 0
    for path in paths:
        img = cv2.imread(path)  # as HPML: 3-channel BGR, whatever the file
        if img is None:
            continue
        img = cv2.resize(img, (size, size)).astype(np.float32)
        if generator is not None:
            img = generator.random_transform(img)
        _ = img / 255.0
        done += 1
    return done / (time.perf_counter() - start)


def bare_decode(records: list[bytes]) -> float:
    start = time.perf_counter()
    for raw in records:
        example = tf.train.Example.FromString(raw)
        encoded = example.features.feature["image"].bytes_list.value[0]
        _ = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    return len(records) / (time.perf_counter() - start)


def batches(plan: TrainPlan, cfg: Config, steps: int) -> tf.data.Dataset:
    """`steps` training batches of rank 0 of 1, exactly as `hpml train` reads them, over as many
    epochs as it takes (an epoch of a small split is shorter than one measurement)."""
    epochs = math.ceil(steps / plan.steps)
    return functools.reduce(tf.data.Dataset.concatenate, (train_dataset(plan, cfg, e, 0) for e in range(epochs)))


def pipeline(plan: TrainPlan, cfg: Config, images: int) -> float:
    """Images/s of a fresh stream after two untimed batches (graph tracing, buffers filling).

    Fresh each round: a stream left open would keep decoding in the background while the
    other loaders are timed, and its next round would read a full buffer, not the pipeline.
    """
    batch = cfg.train.batch_size
    steps = max(1, images // batch)
    stream = iter(batches(plan, cfg, steps + 2))
    next(stream), next(stream)
    start = time.perf_counter()
    for _ in range(steps):
        next(stream)
    return steps * batch / (time.perf_counter() - start)


def bench(cfg: Config, shards: ShardSet, originals: list[str], limit: int, budget: Budget = Budget()) -> dict:
    size, batch = cfg.data.image_size, cfg.train.batch_size
    paths = originals[:limit]
    records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(shards.files("train")).take(limit)]
    print(f"{len(paths)} original files vs the shards in {shards.root}; {size} px, batch {batch}")
    plan = TrainPlan(train_shard_labels(shards), cfg.train, World())
    off = replace(cfg, train=replace(cfg.train, augment=OFF))
    rates: dict[str, list[float]] = {}

    def one_round(_: int) -> dict[str, float]:
        found = {
            "(a) seed-style loader (cv2.imread full size)": seed_loader(paths, size),
            "(a) seed-style loader + its Keras augmentation": seed_loader(paths, size, cfg.train.augment),
            "(b) hpml pipeline, augmentation on": pipeline(plan, cfg, limit),
            "(b) hpml pipeline, augmentation off": pipeline(plan, off, limit),
            "(c) bare shard JPEG decode loop": bare_decode(records),
        }
        for name, rate in found.items():
            rates.setdefault(name, []).append(rate)
        a, a_aug, b_on, b_off, c = found.values()
        return dict(zip(TARGETS, (b_off / a, b_on / a_aug, b_off / c), strict=True))

    estimates = until_decided(one_round, TARGETS, budget)
    for name, values in rates.items():
        print(f"{name:<46} {np.median(values):8.1f} img/s (median of {len(values)})")
    for name, est in estimates.items():
        print("ratio " + est.line(name))
    return {"rates": rates, "ratios": {name: vars(est) | {"verdict": est.verdict} for name, est in estimates.items()}}
