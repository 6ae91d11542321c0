"""Backbones: image -> feature map, for every model hpml offers.

ResNet50V2 (COVID-Net as trained by Covid19-HPML), ResNeXt50-32x4d (COVID-Next, written here
in Keras), EfficientNetB4, MobileNetV2, and a tiny CNN for CPU runs. Each is fed the input range
`model.input_scale` names: by default the one its ImageNet weights were trained with; `unit`
for weights trained on [0, 1] (Covid19-HPML fed ResNet50V2 [0, 1]). Weights only ever come from
local files (hpml.models.build).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

layers = tf.keras.layers


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


# model.input_scale -> (scale, offset) applied to the [0, 1] image. `imagenet` is each backbone's
# own: what its ImageNet weights were trained with ([0, 1] for hpml's own CNNs, as COVID-Next fed).
SCALES = {"unit": (1.0, 0.0), "symmetric": (2.0, -1.0)}
IMAGENET_SCALES = {
    "resnet50v2": (2.0, -1.0),  # [-1, 1]
    "mobilenetv2": (2.0, -1.0),  # [-1, 1]
    "efficientnetb4": (255.0, 0.0),  # [0, 255], normalises inside
    "tiny_cnn": (1.0, 0.0),
    "resnext50": (1.0, 0.0),
}


def input_range(backbone: str, input_scale: str) -> tuple[float, float]:
    """(scale, offset) the backbone's input gets from the [0, 1] image."""
    return IMAGENET_SCALES[backbone] if input_scale == "imagenet" else SCALES[input_scale]


def _application(ctor):
    def build(inputs: tf.Tensor) -> tf.Tensor:
        return ctor(include_top=False, weights=None, input_tensor=inputs).output

    return build


apps = tf.keras.applications
BACKBONES = {
    "tiny_cnn": tiny_cnn,
    "resnext50": resnext50,
    "resnet50v2": _application(apps.ResNet50V2),
    "efficientnetb4": _application(apps.EfficientNetB4),
    "mobilenetv2": _application(apps.MobileNetV2),
}


def backbone_features(name: str, inputs: tf.Tensor, input_scale: str) -> tf.Tensor:
    """The backbone on a [0, 1] image, fed the range `input_scale` asks for."""
    scale, offset = input_range(name, input_scale)
    if (scale, offset) != (1.0, 0.0) or name not in ("tiny_cnn", "resnext50"):
        inputs = layers.Rescaling(scale, offset, name="input_scaling")(inputs)
    return BACKBONES[name](inputs)


def fix_imagenet_normalisation(backbone: tf.keras.Model) -> None:
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
