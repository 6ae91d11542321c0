"""COVID-Net's metrics, computed from a confusion matrix only (rows: true, columns: predicted).

Computing them from the summed matrix, never averaging per batch or per rank, is what makes
them exact (HPML's "macro" numbers were per-batch averages, which is wrong).
"""

from __future__ import annotations

import numpy as np

from hpml.core.config import CLASSES


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def from_confusion(cm: np.ndarray) -> dict:
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(float)
    sensitivity = _ratio(tp, cm.sum(axis=1))  # recall per class
    ppv = _ratio(tp, cm.sum(axis=0))  # precision per class
    f1 = _ratio(2 * sensitivity * ppv, sensitivity + ppv)
    total = int(cm.sum())
    return {
        "classes": list(CLASSES),
        "confusion_matrix": cm.tolist(),
        "count": total,
        "support": cm.sum(axis=1).tolist(),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "sensitivity": dict(zip(CLASSES, sensitivity.tolist(), strict=True)),
        "ppv": dict(zip(CLASSES, ppv.tolist(), strict=True)),
        "f1": dict(zip(CLASSES, f1.tolist(), strict=True)),
        "macro_precision": float(ppv.mean()),
        "macro_recall": float(sensitivity.mean()),
        "macro_f1": float(f1.mean()),
    }


def confusion(labels: np.ndarray, predicted: np.ndarray, n: int = len(CLASSES)) -> np.ndarray:
    return np.bincount(np.asarray(labels) * n + np.asarray(predicted), minlength=n * n).reshape(n, n)
