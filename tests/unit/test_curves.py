"""ROC/PR curves and areas against scikit-learn and the Mann-Whitney U statistic (scipy)."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from hpml.evaluation.curves import areas, one_vs_rest, precision_recall, roc


def _scores(seed, n=400, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if ties:  # few distinct values, as from a saturated or coarse model
        probs = np.round(probs, 1)
    return labels, probs


@pytest.mark.parametrize("ties", [False, True])
def test_roc_equals_scikit_learn_and_mann_whitney(ties):
    labels, probs = _scores(0, ties=ties)
    for c in range(3):
        pos, score = labels == c, probs[:, c]
        got = roc(pos, score)
        fpr, tpr, _ = roc_curve(pos, score, drop_intermediate=False)
        assert np.allclose(got["fpr"], fpr) and np.allclose(got["tpr"], tpr)
        assert np.isclose(got["auc"], roc_auc_score(pos, score), rtol=0, atol=1e-12)
        u = stats.mannwhitneyu(score[pos], score[~pos]).statistic  # ties count half
        assert np.isclose(got["auc"], u / (pos.sum() * (~pos).sum()), rtol=0, atol=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_precision_recall_equals_scikit_learn(ties):
    labels, probs = _scores(1, ties=ties)
    for c in range(3):
        pos, score = labels == c, probs[:, c]
        got = precision_recall(pos, score)
        precision, recall, thresholds = precision_recall_curve(pos, score)
        # scikit-learn: lowest threshold first, with a final (recall 0, precision 1) point
        assert np.allclose(got["precision"], precision[:-1][::-1])
        assert np.allclose(got["recall"], recall[:-1][::-1])
        assert np.allclose(got["thresholds"], thresholds[::-1])
        assert np.isclose(got["average_precision"], average_precision_score(pos, score), rtol=0, atol=1e-12)


def test_one_vs_rest_areas_and_undefined_classes():
    labels, probs = _scores(2)
    found = areas(one_vs_rest(labels, probs))
    assert np.isclose(found["macro_roc_auc"], roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    for c, name in enumerate(("normal", "pneumonia", "COVID-19")):
        assert np.isclose(found["average_precision"][name], average_precision_score(labels == c, probs[:, c]))
    no_covid = labels != 2
    found = areas(one_vs_rest(labels[no_covid], probs[no_covid]))
    assert found["roc_auc"]["COVID-19"] is None and found["macro_roc_auc"] is None
    assert found["roc_auc"]["normal"] is not None
