"""ECE and reliability bins against scikit-learn's calibration_curve and a direct loop."""

import numpy as np
from sklearn.calibration import calibration_curve

from hpml.evaluation.calibration import reliability


def _predictions(seed, n=600, temperature=1.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = (rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[labels]) / temperature
    return labels, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_bins_equal_scikit_learn_calibration_curve():
    labels, probs = _predictions(0)
    got = reliability(labels, probs, bins=10)
    conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
    acc_ref, conf_ref = calibration_curve(correct, conf, n_bins=10, strategy="uniform")
    filled = [i for i, n in enumerate(got["count"]) if n]
    assert np.allclose([got["bin_accuracy"][i] for i in filled], acc_ref)
    assert np.allclose([got["bin_confidence"][i] for i in filled], conf_ref)


def test_ece_equals_a_direct_loop_with_edge_values():
    labels, probs = _predictions(1)
    # Put confidences exactly on bin edges: (lo, hi] puts 0.7 in the bin (0.6, 0.7].
    probs[:3] = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.25, 0.25]]
    got = reliability(labels, probs, bins=10)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    ece, counts = 0.0, []
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        inside = (conf > lo) & (conf <= hi) if b else (conf >= 0) & (conf <= hi)
        counts.append(int(inside.sum()))
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    assert got["count"] == counts and np.isclose(got["ece"], ece, rtol=0, atol=1e-12)


def test_calibrated_vs_over_confident():
    # Labels drawn from the probabilities: calibrated by construction. The same probabilities
    # sharpened (temperature 0.5) claim more confidence than the accuracy they have.
    rng = np.random.default_rng(2)
    probs = rng.dirichlet([1, 1, 1], size=20000)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    assert reliability(labels, probs, bins=10)["ece"] < 0.02
    sharp = probs**2 / (probs**2).sum(1, keepdims=True)
    over = reliability(labels, sharp, bins=10)
    assert over["ece"] > 0.05 and over["mean_confidence"] > over["accuracy"]
