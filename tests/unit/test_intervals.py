"""Intervals against independent implementations: statsmodels (Wilson), scikit-learn metrics on
explicitly resampled patients (the bootstrap), scipy.stats.bootstrap (the same statistic)."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from statsmodels.stats.proportion import proportion_confint

from hpml.core.metrics import confusion
from hpml.evaluation.intervals import bootstrap, per_class, wilson

SEED_CM = np.array([[96, 4, 0], [7, 92, 1], [0, 3, 43]])  # the seed's COVIDx test matrix


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (43, 46), (0, 46), (46, 46), (3, 7), (96, 103), (500, 1000)])
def test_wilson_equals_statsmodels(k, n):
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert np.allclose(wilson(k, n), [lo, hi], rtol=0, atol=1e-12)


def test_seed_covid_sensitivity_interval_is_wide():
    iv = per_class(SEED_CM)
    lo, hi = iv["sensitivity"]["COVID-19"]  # 43 of 46
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (82.5, 97.8)
    assert iv["method"] == "Wilson score" and iv["level"] == 0.95
    # PPV: the column's true positives over the column (43 of 44)
    assert np.allclose(iv["ppv"]["COVID-19"], proportion_confint(43, 44, method="wilson"))
    assert wilson(0, 0) is None


def _patients(rng, n_patients, films):
    """Patients with 1..films images each; the label is per patient, as in COVIDx."""
    labels, predicted, patients = [], [], []
    for p in range(n_patients):
        y = int(rng.integers(0, 3))
        for _ in range(int(rng.integers(1, films + 1))):
            labels.append(y)
            predicted.append(y if rng.random() < 0.8 else int(rng.integers(0, 3)))
            patients.append(("src", f"p{p}"))
    return np.array(labels), np.array(predicted), patients


def test_patient_bootstrap_equals_resampling_patients_explicitly():
    rng = np.random.default_rng(1)
    labels, predicted, patients = _patients(rng, 40, films=3)
    assert len(labels) > 40  # several films per patient: image and patient bootstraps differ
    resamples, seed = 300, 7
    got = bootstrap(labels, predicted, patients, resamples, seed)
    # Reference: draw patients the same way, then concatenate their images and use scikit-learn.
    ids = list(dict.fromkeys(patients))
    members = {pid: [i for i, q in enumerate(patients) if q == pid] for pid in ids}
    draws = np.random.default_rng(seed).integers(0, len(ids), size=(resamples, len(ids)))
    ref = {"accuracy": [], "macro_precision": [], "macro_recall": [], "macro_f1": []}
    for row in draws:
        idx = [i for d in row for i in members[ids[d]]]
        y, p = labels[idx], predicted[idx]
        kw = {"labels": [0, 1, 2], "average": "macro", "zero_division": 0}
        ref["accuracy"].append(accuracy_score(y, p))
        ref["macro_precision"].append(precision_score(y, p, **kw))
        ref["macro_recall"].append(recall_score(y, p, **kw))
        ref["macro_f1"].append(f1_score(y, p, **kw))
    for name, values in ref.items():
        assert np.allclose(got[name], np.percentile(values, [2.5, 97.5]), atol=1e-12), name
    assert got["patients"] == 40 and got["images"] == len(labels) and got["seed"] == seed


def test_one_image_per_patient_matches_scipy_bootstrap():
    rng = np.random.default_rng(2)
    labels, predicted, patients = _patients(rng, 300, films=1)
    got = bootstrap(labels, predicted, patients, 4000, 0)["accuracy"]
    ref = stats.bootstrap(
        ((labels == predicted).astype(float),),
        np.mean,
        n_resamples=4000,
        method="percentile",
        random_state=np.random.default_rng(5),
    ).confidence_interval
    assert abs(got[0] - ref.low) < 0.01 and abs(got[1] - ref.high) < 0.01  # different draws, same statistic


def test_patient_bootstrap_is_wider_than_image_bootstrap_for_clustered_errors():
    # Errors that come per patient (all films of a patient right or all wrong) are fewer
    # independent observations than images: resampling images would understate the spread.
    rng = np.random.default_rng(3)
    labels, predicted, patients = [], [], []
    for p in range(60):
        wrong = rng.random() < 0.2
        for _ in range(4):
            labels.append(0)
            predicted.append(1 if wrong else 0)
            patients.append(("s", str(p)))
    by_patient = bootstrap(np.array(labels), np.array(predicted), patients, 2000, 0)["accuracy"]
    by_image = bootstrap(np.array(labels), np.array(predicted), list(range(len(labels))), 2000, 0)["accuracy"]
    assert by_patient[1] - by_patient[0] > 1.5 * (by_image[1] - by_image[0])


def test_bootstrap_is_seeded():
    labels, predicted, patients = _patients(np.random.default_rng(4), 30, 2)
    assert bootstrap(labels, predicted, patients, 200, 3) == bootstrap(labels, predicted, patients, 200, 3)
    assert bootstrap(labels, predicted, patients, 200, 3) != bootstrap(labels, predicted, patients, 200, 4)
    assert confusion(labels, predicted).sum() == len(labels)
