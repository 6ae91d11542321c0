"""Backbones and heads.

Backbones: ResNet50V2 (COVID-Net as trained by HPML), ResNeXt50-32x4d (COVID-Next, written
here in Keras), EfficientNetB4, MobileNetV2, and a tiny CNN for CPU runs. Heads: `flatten`,
the seed's Flatten -> 1024 -> 256 -> 3 (faithful; ~537 M parameters at 512 px with ResNet50V2),
`gap`, global average pooling -> 3, and `covidnext`, COVID-Next's conv-BN blocks (2048 -> 512
3x3, 512 -> 1024 1x1, 1024 -> 512 3x3, each conv + BN + LeakyReLU(0.01, PyTorch's default))
-> global average pooling -> 3. Weights only ever come from a local file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from hpml.config import CLASSES, ModelConfig

layers = tf.keras.layers
L2 = tf.keras.regularizers.l2(1e-4)


def tiny_cnn(inputs: tf.Tensor) -> tf.Tensor:
    # No BatchNorm: in runs of a few hundred steps its moving statistics lag the weights and
    # make inference-mode validation erratic; at this depth plain ReLU convs train fine.
    x = inputs
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="he_normal")(x)
        x = layers.MaxPooling2D()(x)
    return layers.Conv2D(96, 3, padding="same", activation="relu", kernel_initializer="he_normal")(x)


def _resnext_block(x: tf.Tensor, filters: int, stride: int, project: bool, name: str) -> tf.Tensor:
    """Bottleneck with a 32-group 3x3 convolution (cardinality 32, width 4 per group at stage 1)."""
    width = filters // 2
    shortcut = x
    if project:
        shortcut = layers.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(epsilon=1e-5, name=f"{name}_proj_bn")(shortcut)
    y = layers.Conv2D(width, 1, use_bias=False, name=f"{name}_1")(x)
    y = layers.ReLU()(layers.BatchNormalization(epsilon=1e-5, name=f"{name}_1_bn")(y))
    y = layers.ZeroPadding2D(1)(y)
    y = layers.Conv2D(width, 3, stride, groups=32, use_bias=False, name=f"{name}_2")(y)
    y = layers.ReLU()(layers.BatchNormalization(epsilon=1e-5, name=f"{name}_2_bn")(y))
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_3")(y)
    y = layers.BatchNormalization(epsilon=1e-5, name=f"{name}_3_bn")(y)
    return layers.ReLU()(layers.Add()([shortcut, y]))


def resnext50(inputs: tf.Tensor) -> tf.Tensor:
    x = layers.ZeroPadding2D(3)(inputs)
    x = layers.Conv2D(64, 7, 2, use_bias=False, name="stem_conv")(x)
    x = layers.ReLU()(layers.BatchNormalization(epsilon=1e-5, name="stem_bn")(x))
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    for stage, (blocks, filters) in enumerate(zip((3, 4, 6, 3), (256, 512, 1024, 2048), strict=True)):
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 0 else 1
            x = _resnext_block(x, filters, stride, project=b == 0, name=f"stage{stage + 1}_block{b + 1}")
    return x


def _application(name: str):
    """A Keras application, fed the input range its ImageNet weights were trained with."""
    apps = tf.keras.applications
    ctor, scale, offset = {
        "resnet50v2": (apps.ResNet50V2, 2.0, -1.0),  # [-1, 1]
        "mobilenetv2": (apps.MobileNetV2, 2.0, -1.0),  # [-1, 1]
        "efficientnetb4": (apps.EfficientNetB4, 255.0, 0.0),  # [0, 255], normalises inside
    }[name]

    def build(inputs: tf.Tensor) -> tf.Tensor:
        scaled = layers.Rescaling(scale, offset, name="input_scaling")(inputs)
        return ctor(include_top=False, weights=None, input_tensor=scaled).output

    return build


BACKBONES = {"tiny_cnn": tiny_cnn, "resnext50": resnext50, "resnet50v2": _application("resnet50v2"),
             "efficientnetb4": _application("efficientnetb4"), "mobilenetv2": _application("mobilenetv2")}  # fmt: skip


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


def model_input(gray: tf.Tensor) -> tf.Tensor:
    """uint8 [s, s, 1] -> float [0, 1] with 3 channels: the one place gray becomes RGB.

    Inside the model, so it runs on the accelerator and every caller (training, evaluation,
    prediction, an exported SavedModel) feeds the same 1-channel uint8 images.
    """
    x = layers.Rescaling(1.0 / 255.0, name="to_unit_range")(gray)
    return layers.Concatenate(name="gray_to_rgb")([x, x, x])


def build_model(cfg: ModelConfig, image_size: int) -> tf.keras.Model:
    gray = layers.Input((image_size, image_size, 1), dtype="uint8", name="image")
    inputs = layers.Input((image_size, image_size, 3), name="rgb")
    features = BACKBONES[cfg.backbone](inputs)
    backbone = tf.keras.Model(inputs, features, name=f"backbone_{cfg.backbone}")
    if cfg.weights:
        path = Path(cfg.weights)
        if not path.is_file():
            raise FileNotFoundError(f"model.weights: {path} not found (weights load from local files only)")
        backbone.load_weights(str(path))
        _fix_imagenet_normalisation(backbone)
    outputs = head(backbone(model_input(gray)), cfg.head, cfg.dropout)
    return tf.keras.Model(gray, outputs, name=f"{cfg.backbone}_{cfg.head}")


def _fix_imagenet_normalisation(backbone: tf.keras.Model) -> None:
    """EfficientNet's ImageNet files keep the *stddev* in the Normalization layer's variance slot
    (TensorFlow issue 49930). Keras compensates with an extra rescaling only when it downloads
    the weights itself (weights="imagenet"); a local file loaded into weights=None would divide
    by sqrt(stddev). Squaring the slot gives (x - mean) / stddev, the normalisation the weights
    were trained with; a file already fixed this way is left alone."""
    stddev = np.array([0.229, 0.224, 0.225], np.float32)  # keras.applications.efficientnet
    for layer in backbone.layers:
        if isinstance(layer, layers.Normalization) and len(layer.get_weights()) == 3:
            mean, variance, count = layer.get_weights()  # set_weights refreshes the derived tensors
            if variance.shape == (3,) and np.allclose(variance, stddev, atol=1e-4):
                layer.set_weights([mean, variance**2, count])


def parameter_counts(model: tf.keras.Model) -> dict[str, int]:
    """Parameters per part: backbone, head, total (trainable + non-trainable)."""
    total = model.count_params()
    head_params = sum(layer.count_params() for layer in model.layers if layer.name.startswith("head_"))
    return {"backbone": total - head_params, "head": head_params, "total": total}
