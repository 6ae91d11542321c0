"""Heads: feature map -> class probabilities.

`flatten`, the seed's Flatten -> 1024 -> 256 -> 3 (faithful; 537 M parameters in the head at
512 px with ResNet50V2, 561 M in all), `gap`, global average pooling -> 3, and `covidnext`, COVID-Next's conv-BN blocks
(2048 -> 512 3x3, 512 -> 1024 1x1, 1024 -> 512 3x3, each conv + BN + LeakyReLU(0.01, PyTorch's
default)) -> global average pooling -> 3. Every head's layers are named `head_*`.
"""

from __future__ import annotations

import tensorflow as tf

from hpml.core.config import CLASSES

layers = tf.keras.layers
L2 = tf.keras.regularizers.l2(1e-4)


def _covidnext_blocks(x: tf.Tensor) -> tf.Tensor:
    for i, (filters, kernel) in enumerate(((512, 3), (1024, 1), (512, 3)), 1):
        x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"head_conv{i}")(x)
        x = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"head_conv{i}_bn")(x)  # PyTorch's BN
        x = layers.LeakyReLU(0.01, name=f"head_conv{i}_act")(x)
    return x


def head(features: tf.Tensor, kind: str, dropout: float) -> tf.Tensor:
    if kind == "flatten":
        x = layers.Flatten(name="head_flatten")(features)
        x = layers.Dense(1024, activation="relu", kernel_regularizer=L2, name="head_fc1")(x)
        x = layers.Dense(256, activation="relu", kernel_regularizer=L2, name="head_fc2")(x)
    elif kind == "covidnext":
        x = layers.GlobalAveragePooling2D(name="head_gap")(_covidnext_blocks(features))
    else:
        x = layers.GlobalAveragePooling2D(name="head_gap")(features)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    # float32 output even under mixed precision: softmax in fp16 loses small probabilities.
    return layers.Dense(len(CLASSES), activation="softmax", dtype="float32", name="head_out")(x)
