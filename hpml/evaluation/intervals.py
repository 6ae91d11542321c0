"""How sure a metric is: Wilson score intervals per class, and a bootstrap that resamples patients.

Per-class sensitivity and PPV are binomial proportions (k of n), so they get the Wilson score
interval: unlike the normal approximation it stays inside [0, 1] and keeps its coverage at the
sizes of a COVIDx test class (46 COVID-19 images), and it is what statsmodels' `proportion_confint(
method="wilson")` computes. Accuracy and the macro averages are not simple proportions, so they get
a percentile bootstrap; it resamples PATIENTS, not images, because films of one patient are not
independent (COVIDx has patients with several films) and an image bootstrap would be too narrow.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from hpml.core.config import CLASSES

LEVEL = 0.95
WILSON = "Wilson score"
BOOTSTRAP = "percentile bootstrap, resampling patients"


def wilson(k: int, n: int, level: float = LEVEL) -> list[float] | None:
    """[low, high] for k successes in n trials; None when n == 0 (nothing to estimate)."""
    if n <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def per_class(cm: np.ndarray, level: float = LEVEL) -> dict:
    """Wilson intervals of sensitivity (k = TP of the row) and PPV (k = TP of the column)."""
    cm = np.asarray(cm, dtype=np.int64)
    tp, rows, cols = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    return {
        "method": WILSON,
        "level": level,
        "sensitivity": {c: wilson(int(tp[i]), int(rows[i]), level) for i, c in enumerate(CLASSES)},
        "ppv": {c: wilson(int(tp[i]), int(cols[i]), level) for i, c in enumerate(CLASSES)},
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # An undefined ratio (no true / no predicted image of a class) counts as 0, as in
    # hpml.core.metrics.from_confusion and scikit-learn's zero_division=0.
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def summary_statistics(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and macro P/R/F1 of a stack of confusion matrices [..., k, k] (float counts)."""
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    recall = _ratio(tp, cms.sum(axis=-1))
    precision = _ratio(tp, cms.sum(axis=-2))
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = cms.sum(axis=(-2, -1))
    return {
        "accuracy": _ratio(tp.sum(axis=-1), total),
        "macro_precision": precision.mean(axis=-1),
        "macro_recall": recall.mean(axis=-1),
        "macro_f1": f1.mean(axis=-1),
    }


def patient_index(patients: list) -> tuple[np.ndarray, int]:
    """Each image's patient as 0..P-1 (patients are hashable keys, e.g. (source, patient id))."""
    codes: dict = {}
    index = np.array([codes.setdefault(p, len(codes)) for p in patients], dtype=np.int64)
    return index, len(codes)


def patient_draws(n_patients: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, P]: for each resample, how many times each patient was drawn (with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_patients, size=(resamples, n_patients))
    return np.stack([np.bincount(row, minlength=n_patients) for row in draws])


def resampled_confusions(labels: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, k, k] confusion matrices, image i counted weights[b, i] times in resample b."""
    k = len(CLASSES)
    cell = np.asarray(labels) * k + np.asarray(predicted)
    onehot = np.zeros((len(cell), k * k))
    onehot[np.arange(len(cell)), cell] = 1.0
    return (weights @ onehot).reshape(-1, k, k)


def percentile(values: np.ndarray, level: float = LEVEL) -> list[float]:
    lo, hi = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return [float(lo), float(hi)]


def bootstrap(labels, predicted, patients: list, resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> dict:
    """Percentile intervals of accuracy and macro P/R/F1, resampling patients with replacement."""
    index, n_patients = patient_index(patients)
    out: dict = {
        "method": BOOTSTRAP,
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "patients": n_patients,
        "images": len(index),
    }
    if n_patients == 0 or resamples <= 0:
        return out
    weights = patient_draws(n_patients, resamples, seed)[:, index].astype(float)
    stats = summary_statistics(resampled_confusions(labels, predicted, weights))
    out.update({name: percentile(values, level) for name, values in stats.items()})
    return out
