"""`hpml bench input`: images/s a training step can be fed, measured in one run.

(a) the seed's loader: cv2.imread of the original full-size file, resize, float (HPML's
    data.py, one process), without and with the Keras ImageDataGenerator augmentation;
(b) the hpml tf.data pipeline from the shards, with and without augmentation, one rank;
(c) a bare loop decoding the shard JPEGs with OpenCV, one core.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from hpml.config import AugmentConfig, Config
from hpml.data import shard_files, train_dataset
from hpml.world import World

OFF = AugmentConfig(rotation=0.0, shift=0.0, flip=False, brightness=0.0, zoom=0.0)


def seed_loader(paths: list[str], size: int, aug: AugmentConfig | None = None) -> float:
    """HPML's loader; with `aug`, plus the Keras ImageDataGenerator transform it trained with."""
    generator = None
    if aug is not None:
        generator = tf.keras.preprocessing.image.ImageDataGenerator(
            rotation_range=aug.rotation, width_shift_range=aug.shift, height_shift_range=aug.shift,
            horizontal_flip=aug.flip, brightness_range=(1 - aug.brightness, 1 + aug.brightness),
            zoom_range=aug.zoom, fill_mode="constant",
        )  # fmt: skip
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


def bare_decode(shard_dir: Path, limit: int) -> float:
    records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(shard_files(shard_dir, "train")).take(limit)]
    start = time.perf_counter()
    for raw in records:
        example = tf.train.Example.FromString(raw)
        encoded = example.features.feature["image"].bytes_list.value[0]
        _ = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    return len(records) / (time.perf_counter() - start)


def pipeline(shard_dir: Path, cfg: Config, images: int) -> float:
    steps = max(1, images // cfg.train.batch_size)
    ds = train_dataset(shard_dir, cfg, World(), epoch=0, start_step=0, steps=steps + 2)
    it = iter(ds)
    next(it), next(it)  # warm-up: graph tracing and buffer fill are not throughput
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * cfg.train.batch_size / (time.perf_counter() - start)


def bench(cfg: Config, shard_dir: Path, originals: list[str], limit: int) -> dict[str, float]:
    size = cfg.data.image_size
    paths = originals[:limit]
    print(f"{len(paths)} original files vs the shards in {shard_dir}; {size} px, batch {cfg.train.batch_size}")
    rates = {
        "(a) seed-style loader (cv2.imread full size)": seed_loader(paths, size),
        "(a) seed-style loader + its Keras augmentation": seed_loader(paths, size, cfg.train.augment),
        "(b) hpml pipeline, augmentation on": pipeline(shard_dir, cfg, limit),
        "(b) hpml pipeline, augmentation off": pipeline(
            shard_dir, replace(cfg, train=replace(cfg.train, augment=OFF)), limit
        ),
        "(c) bare shard JPEG decode loop": bare_decode(shard_dir, limit),
    }
    for name, rate in rates.items():
        print(f"{name:<46} {rate:8.1f} img/s")
    a, a_aug, b_on, b_off, c = rates.values()
    print(f"ratio (b, aug off)/(a, no aug) = {b_off / a:6.1f}   (target >= 20)")
    print(f"ratio (b, aug on)/(a, aug)     = {b_on / a_aug:6.1f}   (target >= 20)")
    print(f"ratio (b, aug off)/(c)         = {b_off / c:6.2f}   (target >= 0.6)")
    return rates
