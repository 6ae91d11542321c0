"""Synthetic chest X-ray pictures with a visible, learnable class pattern.

A body silhouette with two dark lung fields, then per class:
  normal     clear lungs;
  pneumonia  one large dense consolidation low in one lung (lobar pattern);
  COVID-19   many small hazy opacities in both lungs, towards the periphery (GGO pattern).
Drawn at 128 px and scaled to the requested size with noise, so a tiny CNN at 64-128 px
learns it in a few epochs while the files still look and weigh like radiographs.
"""

from __future__ import annotations

import cv2
import numpy as np

BASE = 128


def _blob(canvas: np.ndarray, cx: float, cy: float, r: float, value: float) -> None:
    yy, xx = np.mgrid[0 : canvas.shape[0], 0 : canvas.shape[1]]
    canvas += value * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * r * r)))


def render(label: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 picture in [0, 1] of shape (height, width)."""
    img = np.full((BASE, BASE), 0.15, np.float32)
    cv2.ellipse(img, (64, 70), (56, 62), 0, 0, 360, 0.7, -1)  # body
    lungs = np.zeros_like(img)
    for cx in (42, 86):
        cv2.ellipse(lungs, (cx + int(rng.integers(-3, 4)), 66), (17, 34), 0, 0, 360, 1.0, -1)
    img -= 0.45 * lungs
    if label == "pneumonia":
        side = 42 if rng.random() < 0.5 else 86
        _blob(img, side + rng.uniform(-4, 4), rng.uniform(76, 88), rng.uniform(9, 13), 0.5)
    elif label == "COVID-19":
        for _ in range(int(rng.integers(6, 10))):
            side = 42 if rng.random() < 0.5 else 86
            dx = rng.choice([-1, 1]) * rng.uniform(6, 12)
            _blob(img, side + dx, rng.uniform(44, 92), rng.uniform(3.5, 5.5), 0.4)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    img = img * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05)  # exposure varies
    big = cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC)
    big += rng.normal(0.0, 0.012, big.shape).astype(np.float32)
    return np.clip(big, 0.0, 1.0)


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width): mostly 400-1000 px, one in ten up to ~2500 px, aspect 0.8-1.25."""
    long_side = int(rng.integers(1800, 2500)) if rng.random() < 0.1 else int(rng.integers(400, 1000))
    aspect = rng.uniform(0.8, 1.25)
    return long_side, max(64, int(long_side * aspect))


def film_identity(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What makes two real films of healthy lungs different pictures: soft tissue, positioning,
    exposure falling off across the film. Broad bright/dark patches outside the lung fields, so
    the class pattern (inside the lungs, drawn by `render`) is untouched. Without it two renders
    of one class differ by noise only, and a perceptual hash rightly calls them one picture.
    """
    h, w = img.shape
    yy, xx = (np.mgrid[0:BASE, 0:BASE].astype(np.float32) + 0.5) / BASE  # smooth: drawn small
    field = np.zeros((BASE, BASE), np.float32)
    for _ in range(6):
        cx, cy, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.25)
        field += rng.choice([-1, 1]) * rng.uniform(0.25, 0.5) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    # render()'s lung fields (centres x 42 and 86 of 128, y 66; radii 17 x 34), with a margin.
    lungs = sum(np.exp(-((((xx - cx) / 0.2) ** 2 + ((yy - 0.52) / 0.34) ** 2) ** 4)) for cx in (42 / BASE, 86 / BASE))
    field *= 1 - np.clip(lungs, 0, 1)
    return np.clip(img + cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR), 0, 1).astype(np.float32)
