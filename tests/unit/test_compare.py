"""`hpml evaluate --compare`: McNemar against statsmodels, the paired differences, refusals."""

import csv

import numpy as np
import pytest
from conftest import hpml
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from hpml.evaluation.compare import CompareError, compare, mcnemar

CLASSES = ("normal", "pneumonia", "COVID-19")


def _paired(b, c, same_right=50, same_wrong=5):
    """Correctness of A and B with b images only A gets right and c only B gets right."""
    a = [True] * b + [False] * c + [True] * same_right + [False] * same_wrong
    bb = [False] * b + [True] * c + [True] * same_right + [False] * same_wrong
    return np.array(a), np.array(bb)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 3), (3, 9), (10, 14), (7, 7), (12, 13), (20, 40), (31, 9)])
def test_mcnemar_equals_statsmodels(b, c):
    correct_a, correct_b = _paired(b, c)
    got = mcnemar(correct_a, correct_b)
    table = [[50, b], [c, 5]]  # rows: A right/wrong, columns: B right/wrong
    exact = b + c < 25
    ref = sm_mcnemar(table, exact=exact, correction=True)
    assert (got["only_a_right"], got["only_b_right"]) == (b, c)
    assert np.isclose(got["p_value"], ref.pvalue, rtol=1e-10, atol=1e-15), (got, ref)
    if b + c:
        assert got["test"].startswith("exact") == exact
        assert np.isclose(got["statistic"], ref.statistic)


def _write_run(root, name, rows):
    out = root / name / "eval" / "test"
    out.mkdir(parents=True)
    with (out / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "file", "patient", "label", "predicted", *(f"p_{c}" for c in CLASSES)])
        for source, file, patient, label, predicted in rows:
            writer.writerow([source, file, patient, label, predicted, "0.3", "0.3", "0.4"])
    return root / name


def _rows(rng, n=120, accuracy=0.8):
    rows = []
    for i in range(n):
        label = CLASSES[i % 3]
        predicted = label if rng.random() < accuracy else CLASSES[(i + 1) % 3]
        rows.append(("src", f"img{i:03d}.png", f"p{i // 2}", label, predicted))
    return rows


def test_paired_differences_and_identical_runs(tmp_path):
    rng = np.random.default_rng(0)
    rows_a = _rows(rng)
    rows_b = [(s, f, p, y, y if k % 4 == 0 else q) for k, (s, f, p, y, q) in enumerate(rows_a)]  # B fixes some
    a, b = _write_run(tmp_path, "a", rows_a), _write_run(tmp_path, "b", rows_b[::-1])  # order must not matter
    result = compare(a, b, "test", resamples=500, seed=1)
    correct_a = np.array([y == q for _, _, _, y, q in rows_a])
    correct_b = np.array([y == q for _, _, _, y, q in rows_b])
    d = result["differences_b_minus_a"]
    assert np.isclose(d["accuracy"]["difference"], correct_b.mean() - correct_a.mean())
    for i, c in enumerate(CLASSES):
        member = np.arange(len(rows_a)) % 3 == i
        diff = d[f"sensitivity_{c}"]
        assert np.isclose(diff["difference"], correct_b[member].mean() - correct_a[member].mean())
        assert diff["interval"][0] <= diff["difference"] <= diff["interval"][1]
    assert result["mcnemar"]["only_a_right"] == 0 and result["mcnemar"]["only_b_right"] > 0
    same = compare(a, a, "test", resamples=200)
    assert same["mcnemar"]["p_value"] == 1.0 and same["differences_b_minus_a"]["accuracy"]["interval"] == [0.0, 0.0]


def test_refuses_different_images_or_labels(tmp_path):
    rows = _rows(np.random.default_rng(1))
    a = _write_run(tmp_path, "a", rows)
    b = _write_run(tmp_path, "b", rows[:-1])
    with pytest.raises(CompareError, match="not the same test images: 1 only in"):
        compare(a, b, "test")
    relabelled = [rows[0][:3] + ("COVID-19" if rows[0][3] != "COVID-19" else "normal",) + rows[0][4:], *rows[1:]]
    c = _write_run(tmp_path, "c", relabelled)
    with pytest.raises(CompareError, match="label is"):
        compare(a, c, "test")
    with pytest.raises(CompareError, match="run `hpml evaluate --run-dir"):
        compare(a, tmp_path / "nothing", "test")


def test_cli_compare_refuses_and_reports(tmp_path):
    rows = _rows(np.random.default_rng(2))
    a, b = _write_run(tmp_path, "a", rows), _write_run(tmp_path, "b", rows[:50])
    proc = hpml("evaluate", "--compare", a, b, "--split", "test", check=False)
    assert proc.returncode == 2 and "not the same test images" in proc.stderr
    c = _write_run(tmp_path, "c", rows)
    proc = hpml("evaluate", "--compare", a, c, "--split", "test", "--out", tmp_path / "cmp")
    assert "McNemar" in proc.stdout and (tmp_path / "cmp" / "compare.json").is_file()
