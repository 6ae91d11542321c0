"""Grad-CAM (Selvaraju et al. 2017) for every hpml backbone, and its overlay on the model's input.

hpml.models wraps each backbone in a nested Keras model `backbone_<name>` whose output is the
last convolutional feature map A (for the Keras applications: their final activation). For a
target score t:

    alpha_k = mean over positions of d t / d A_k,    map = ReLU(sum_k alpha_k A_k),

bilinearly upsampled to the input size and scaled to [0, 1]. Scores are logits, not softmax
probabilities (the paper's choice; a confident softmax has vanishing gradients). Two targets:

  vs-normal (default)  t = y_c - y_normal for a finding c (pneumonia, COVID-19): the log-odds of
                       c against a normal film, i.e. "where is the finding"; for a normal
                       prediction t = y_normal. A contrastive Grad-CAM ("why c rather than
                       normal", after Prabhushankar et al. 2020).
  logit                t = y_c, the original Grad-CAM.

Why vs-normal is the default: evidence that a class shares with normal (clear lung fields)
raises y_c too, and on the demo's synthetic films the plain-logit map of the trained tiny CNN
peaked on the CLEAR lung for most pneumonia images; the log-odds map peaks on the
consolidation (tests/pipeline/test_gradcam.py measures both). The input is the uint8 gray image the
model itself takes (hpml.models.build.model_input), so the map is over exactly the pixels the
prediction came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from hpml.core.config import CLASSES


def _backbone(model: tf.keras.Model) -> tf.keras.Model:
    found = [layer for layer in model.layers if layer.name.startswith("backbone_")]
    if len(found) != 1:
        raise ValueError(f"{model.name}: expected one nested 'backbone_*' model, found {len(found)}")
    return found[0]


def explainer(model: tf.keras.Model) -> tf.keras.Model:
    """gray uint8 -> (feature map of the backbone as called in `model`, input of the softmax layer)."""
    # get_output_at(0): the backbone's output where the outer model calls it, not its own graph.
    features = _backbone(model).get_output_at(0)
    return tf.keras.Model(model.inputs, [features, model.get_layer("head_out").input])


TARGETS = ("vs-normal", "logit")


def gradcam(
    model: tf.keras.Model,
    images: np.ndarray,
    classes: np.ndarray | None = None,
    batch: int = 16,
    target: str = "vs-normal",
):
    """(maps [N, s, s] in [0, 1], class used per image, softmax [N, k]).

    classes: the class to explain per image; default the predicted one. target: see above.
    """
    if target not in TARGETS:
        raise ValueError(f"Grad-CAM target {target!r}: choose from {', '.join(TARGETS)}")
    normal = CLASSES.index("normal")
    inner = explainer(model)
    dense = model.get_layer("head_out")
    maps, used, probs = [], [], []
    for start in range(0, len(images), batch):
        x = tf.constant(images[start : start + batch])
        with tf.GradientTape() as tape:
            features, pre = inner(x, training=False)
            tape.watch(features)
            logits = tf.matmul(tf.cast(pre, tf.float32), dense.kernel) + dense.bias
            c = logits.numpy().argmax(1) if classes is None else np.asarray(classes[start : start + batch])
            score = tf.gather(logits, c, axis=1, batch_dims=1)
            if target == "vs-normal":
                score -= tf.where(tf.constant(c) == normal, 0.0, logits[:, normal])
        p = tf.nn.softmax(logits).numpy()
        grads = tf.cast(tape.gradient(score, features), tf.float32)
        alpha = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(alpha * tf.cast(features, tf.float32), axis=-1))
        cam = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")[..., 0].numpy()
        top = cam.reshape(len(cam), -1).max(axis=1)
        maps.append(np.divide(cam, top[:, None, None], out=np.zeros_like(cam), where=top[:, None, None] > 0))
        used.append(c)
        probs.append(p)
    return np.concatenate(maps), np.concatenate(used), np.concatenate(probs)


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(row, column) of the map's maximum."""
    return tuple(int(v) for v in np.unravel_index(np.argmax(heatmap), heatmap.shape))  # type: ignore[return-value]


def overlay(gray: np.ndarray, heatmap: np.ndarray, path: Path, title: str, footer: str = "") -> None:
    """PNG: the model input, and the same input with the map in colour on top (peak marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gray = np.asarray(gray).squeeze()
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 3.9))
    for ax in (left, right):
        ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    shown = right.imshow(heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    y, x = peak(heatmap)
    right.plot([x], [y], marker="+", color="white", markersize=14, markeredgewidth=2)
    left.set_title(f"model input ({gray.shape[0]} px)", fontsize=9)
    right.set_title("Grad-CAM (+ = peak)", fontsize=9)
    fig.colorbar(shown, ax=right, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=10)
    if footer:
        fig.text(0.5, 0.01, footer, ha="center", fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def class_name(index: int) -> str:
    return CLASSES[int(index)]
