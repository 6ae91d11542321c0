"""One-vs-rest ROC and precision-recall curves per class, with their areas.

For class c the positives are the images whose true label is c and the score is the softmax
probability of c. Thresholds are the distinct scores, highest first; tied scores move together
(one point per distinct score), as scikit-learn's roc_curve / precision_recall_curve do.
ROC AUC is the trapezoid area (= the Mann-Whitney probability that a positive outscores a
negative, ties counting half); the PR summary is average precision, the step-wise area
sum_n (R_n - R_{n-1}) P_n, which does not interpolate optimistically between points.
"""

from __future__ import annotations

import numpy as np

from hpml.core.config import CLASSES


def _cumulative(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, false positives, threshold) at each distinct score, highest first."""
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(positive)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps.astype(float), fps.astype(float), scores[last_of_tie]


def roc(positive: np.ndarray, scores: np.ndarray) -> dict:
    """fpr, tpr, thresholds (from (0, 0) up) and the area; area None without both kinds of image."""
    positive, scores = np.asarray(positive, bool), np.asarray(scores, float)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return {"auc": None, "fpr": [], "tpr": [], "thresholds": []}
    tps, fps, thresholds = _cumulative(positive, scores)
    tpr, fpr = np.r_[0.0, tps / n_pos], np.r_[0.0, fps / n_neg]
    return {
        "auc": float(np.trapz(tpr, fpr)),
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "thresholds": [None, *thresholds.tolist()],  # None: above every score (JSON has no inf)
    }


def precision_recall(positive: np.ndarray, scores: np.ndarray) -> dict:
    """precision, recall, thresholds (highest threshold first) and average precision."""
    positive, scores = np.asarray(positive, bool), np.asarray(scores, float)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return {"average_precision": None, "precision": [], "recall": [], "thresholds": []}
    tps, fps, thresholds = _cumulative(positive, scores)
    precision, recall = tps / (tps + fps), tps / n_pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return {
        "average_precision": ap,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "thresholds": thresholds.tolist(),
    }


def one_vs_rest(labels: np.ndarray, probs: np.ndarray) -> dict:
    """{class: {"roc": ..., "pr": ..., "positives": n}} for every class."""
    labels, probs = np.asarray(labels), np.asarray(probs, float)
    return {
        c: {
            "positives": int((labels == i).sum()),
            "roc": roc(labels == i, probs[:, i]),
            "pr": precision_recall(labels == i, probs[:, i]),
        }
        for i, c in enumerate(CLASSES)
    }


def areas(curves: dict) -> dict:
    """The numbers for metrics.json: ROC AUC and average precision per class, and their means."""
    roc_auc = {c: v["roc"]["auc"] for c, v in curves.items()}
    ap = {c: v["pr"]["average_precision"] for c, v in curves.items()}
    defined = [v for v in roc_auc.values() if v is not None]
    defined_ap = [v for v in ap.values() if v is not None]
    return {
        "roc_auc": roc_auc,
        "average_precision": ap,
        "macro_roc_auc": float(np.mean(defined)) if len(defined) == len(roc_auc) else None,
        "macro_average_precision": float(np.mean(defined_ap)) if len(defined_ap) == len(ap) else None,
        "definition": "one-vs-rest on the softmax probability; ROC AUC by trapezoids, "
        "PR summarised by average precision (step-wise, no interpolation)",
    }
