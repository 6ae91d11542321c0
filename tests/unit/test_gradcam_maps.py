"""Grad-CAM on untrained models: with the gap head it is the class activation map; the flatten head works too."""

import numpy as np
import pytest
import tensorflow as tf

from hpml.core.config import ModelConfig
from hpml.models.build import build_model
from hpml.serve.gradcam import gradcam, overlay, peak

BACKBONES = ["tiny_cnn", "resnet50v2", "resnext50", "efficientnetb4", "mobilenetv2"]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradcam_with_gap_head_is_the_class_activation_map(backbone, tmp_path):
    # With global average pooling + one dense layer, y_c = sum_k w_kc mean(A_k) + b_c, so Grad-CAM's
    # weights are w_kc / (h w) and the map is ReLU(sum_k w_kc A_k) (Zhou et al.'s CAM), up to scale;
    # for the vs-normal target the weights are w_kc - w_k,normal. Computed here from the nested
    # backbone called directly, not through hpml.serve.gradcam's graph.
    size = 32 if backbone != "efficientnetb4" else 64
    model = build_model(ModelConfig(backbone=backbone, head="gap"), size)
    images = np.random.default_rng(0).integers(0, 256, (2, size, size, 1)).astype(np.uint8)
    x = tf.cast(images, tf.float32) / 255.0
    features = model.get_layer(f"backbone_{backbone}")(tf.concat([x, x, x], -1)).numpy()
    weights = model.get_layer("head_out").kernel.numpy()
    for target in ("logit", "vs-normal"):
        maps, used, probs = gradcam(model, images, classes=np.array([1, 0]), target=target)
        assert maps.shape == (2, size, size) and np.allclose(probs, model(images).numpy(), atol=1e-5)
        for i, c in enumerate(used):
            w = weights[:, c] - (weights[:, 0] if target == "vs-normal" and c != 0 else 0)
            cam = np.maximum(features[i] @ w, 0)
            ref = tf.image.resize(cam[None, ..., None], (size, size), method="bilinear")[0, ..., 0].numpy()
            ref = ref / ref.max() if ref.max() > 0 else ref
            assert np.allclose(maps[i], ref, atol=1e-4), (backbone, target)
    overlay(images[0], maps[0], tmp_path / "o.png", "title")
    assert (tmp_path / "o.png").read_bytes().startswith(b"\x89PNG")


def test_gradcam_with_the_seed_flatten_head():
    model = build_model(ModelConfig(backbone="tiny_cnn", head="flatten"), 64)
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 1)).astype(np.uint8)
    maps, used, probs = gradcam(model, images, classes=np.array([2, 1]))
    assert np.array_equal(gradcam(model, images)[1], probs.argmax(1))  # default: the predicted class
    assert list(used) == [2, 1] and np.allclose(probs, model(images).numpy(), atol=1e-5)
    assert maps.shape == (2, 64, 64) and 0.0 <= maps.min() and maps.max() <= 1.0
    if maps[0].any():
        assert maps[0].max() == 1.0 and peak(maps[0]) == tuple(np.argwhere(maps[0] == 1.0)[0])
