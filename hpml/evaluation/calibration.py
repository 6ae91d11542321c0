"""Calibration: does a softmax of 0.9 mean right 9 times in 10? Expected calibration error and
the numbers of a reliability diagram.

Top-label calibration as in Guo et al. 2017 ("On calibration of modern neural networks"): the
confidence of an image is its largest softmax probability, it is correct when that class is the
true one; confidences fall into `bins` equal-width bins (lo, hi] (the first one includes 0, as
scikit-learn's calibration_curve bins), and

    ECE = sum over bins of (images in bin / all images) * |accuracy in bin - mean confidence in bin|.
"""

from __future__ import annotations

import numpy as np

DEFINITION = "top-label, equal-width bins (lo, hi], ECE = sum_b n_b/N |acc_b - conf_b|"


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict:
    labels, probs = np.asarray(labels), np.asarray(probs, float)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels).astype(float) if len(probs) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], confidence)  # side='left': a value on an edge goes down
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=correct, minlength=bins) / count
        mean_conf = np.bincount(which, weights=confidence, minlength=bins) / count
    filled = count > 0
    total = max(int(count.sum()), 1)
    ece = float(np.sum(count[filled] / total * np.abs(accuracy[filled] - mean_conf[filled])))
    gaps = np.abs(accuracy[filled] - mean_conf[filled])
    return {
        "definition": DEFINITION,
        "bins": bins,
        "ece": ece,
        "mce": float(gaps.max()) if gaps.size else 0.0,  # the worst bin
        "mean_confidence": float(confidence.mean()) if len(confidence) else None,
        "accuracy": float(correct.mean()) if len(correct) else None,
        "edges": edges.tolist(),
        "count": count.tolist(),
        "bin_accuracy": [float(a) if f else None for a, f in zip(accuracy, filled, strict=True)],
        "bin_confidence": [float(c) if f else None for c, f in zip(mean_conf, filled, strict=True)],
    }
