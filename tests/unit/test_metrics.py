"""COVID-Net's metrics from a confusion matrix: the seed's tables, and scikit-learn's numbers."""

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

from hpml.core.metrics import confusion, from_confusion

SEED_CM = [[96, 4, 0], [7, 92, 1], [0, 3, 43]]


def test_seed_confusion_matrix_reproduces_the_seed_tables():
    m = from_confusion(np.array(SEED_CM))
    sens = [round(100 * m["sensitivity"][c], 1) for c in ("normal", "pneumonia", "COVID-19")]
    ppv = [100 * m["ppv"][c] for c in ("normal", "pneumonia", "COVID-19")]
    assert sens == [96.0, 92.0, 93.5]
    assert np.allclose(ppv, [93.2, 93.0, 97.7], atol=0.1)


def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    m = from_confusion(confusion(y, p))
    assert m["confusion_matrix"] == confusion_matrix(y, p).tolist()
    assert np.isclose(m["macro_precision"], precision_score(y, p, average="macro"))
    assert np.isclose(m["macro_recall"], recall_score(y, p, average="macro"))
    assert np.isclose(m["macro_f1"], f1_score(y, p, average="macro"))
    assert np.allclose(list(m["sensitivity"].values()), recall_score(y, p, average=None))
    assert np.isclose(m["accuracy"], (y == p).mean())
