"""The model: uint8 gray image -> backbone (hpml.models.backbones) -> head (hpml.models.heads).

Backbone weights (`model.weights`) only ever come from a local file: `imagenet` is the file
`hpml weights fetch` left in the shared cache (hpml.models.weights_cache); nothing downloads here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf

from hpml.core.config import ModelConfig
from hpml.models.backbones import backbone_features, fix_imagenet_normalisation
from hpml.models.heads import head
from hpml.models.weights_cache import resolve

layers = tf.keras.layers
log = logging.getLogger(__name__)


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
    features = backbone_features(cfg.backbone, inputs, cfg.input_scale)
    backbone = tf.keras.Model(inputs, features, name=f"backbone_{cfg.backbone}")
    weights = resolve(cfg.weights, cfg.backbone)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"model.weights: {path} not found (weights load from local files only)")
        backbone.load_weights(str(path))
        fix_imagenet_normalisation(backbone)
        log.info("model.weights %s: loaded %s into the %s backbone", cfg.weights, path, cfg.backbone)
    outputs = head(backbone(model_input(gray)), cfg.head, cfg.dropout)
    return tf.keras.Model(gray, outputs, name=f"{cfg.backbone}_{cfg.head}")


def parameter_counts(model: tf.keras.Model) -> dict[str, int]:
    """Parameters per part: backbone, head, total (trainable + non-trainable)."""
    total = model.count_params()
    head_params = sum(layer.count_params() for layer in model.layers if layer.name.startswith("head_"))
    return {"backbone": total - head_params, "head": head_params, "total": total}
