"""Training augmentation on uint8 gray images: stateless, so a resumed run replays it exactly.

One affine warp does rotation, shift, zoom and the horizontal flip; brightness scales the
pixels. Every random number comes from `tf.random.stateless_uniform` keyed by the record's
position in the epoch (hpml.train.data), never from a generator's state.
"""

from __future__ import annotations

import tensorflow as tf


def augment(img: tf.Tensor, aug, seed: tf.Tensor) -> tf.Tensor:
    """Rotation, shift, zoom (one affine warp), flip, brightness on uint8 [s, s, 1].

    Stateless, keyed by `seed`: a resumed run replays exactly the same augmentations.
    """
    size = tf.cast(tf.shape(img)[0], tf.float32)
    u = tf.random.stateless_uniform([6], seed, -1.0, 1.0)
    if aug.rotation or aug.zoom or aug.shift or aug.flip:  # one warp does all four
        angle = u[0] * aug.rotation * 3.14159265 / 180.0
        zoom = 1.0 + u[1] * aug.zoom
        tx, ty = u[2] * aug.shift * size, u[3] * aug.shift * size
        c, s = tf.cos(angle) / zoom, tf.sin(angle) / zoom
        center = size / 2.0
        # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2).
        a0, a1, a2 = c, -s, center - c * center + s * center - tx
        b0, b1, b2 = s, c, center - s * center - c * center - ty
        if aug.flip:  # mirror the output: x -> (size - 1 - x), folded into the same warp
            mirror = u[4] > 0.0
            a2 = tf.where(mirror, a2 + a0 * (size - 1.0), a2)
            b2 = tf.where(mirror, b2 + b0 * (size - 1.0), b2)
            a0, b0 = tf.where(mirror, -a0, a0), tf.where(mirror, -b0, b0)
        transform = tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])[tf.newaxis]
        img = tf.raw_ops.ImageProjectiveTransformV3(
            images=img[tf.newaxis],
            transforms=transform,
            output_shape=tf.shape(img)[:2],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )[0]
    if aug.brightness:
        scaled = tf.cast(img, tf.float32) * (1.0 + u[5] * aug.brightness)
        img = tf.cast(tf.clip_by_value(tf.round(scaled), 0.0, 255.0), tf.uint8)
    return img
