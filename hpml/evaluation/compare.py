"""`hpml evaluate --compare RUN_A RUN_B`: two models on the same images, compared pair by pair.

Both runs must have been evaluated on the same split (RUN/eval/<split>/predictions.csv) and the
two files must list exactly the same images with the same labels and patients; otherwise the
comparison is refused. On paired data the question "is B better than A?" is McNemar's test on
the images where exactly one model is right (b: only A right, c: only B right): the exact
two-sided binomial test of b against Binomial(b + c, 1/2) while b + c < 25, else the chi-square
statistic with continuity correction, (|b - c| - 1)^2 / (b + c) on 1 degree of freedom (the rule
of statsmodels' `mcnemar` with exact=True / exact=False). Differences in accuracy and per-class
sensitivity (B - A) get a paired percentile bootstrap that resamples patients.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import stats

from hpml.core.config import CLASSES
from hpml.core.files import write_json_atomic
from hpml.core.runfiles import RunDir
from hpml.evaluation.intervals import LEVEL, patient_draws, patient_index, percentile

EXACT_BELOW = 25  # discordant pairs: below this the exact binomial test, else chi-square


class CompareError(ValueError):
    """The two evaluations cannot be compared (not the same images, or missing)."""


def read_predictions(run_dir: Path, split: str) -> dict[tuple[str, str], dict]:
    path = RunDir(run_dir).eval(split) / "predictions.csv"
    if not path.is_file():
        raise CompareError(f"{path}: not found; run `hpml evaluate --run-dir {run_dir} --split {split}` first")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"source", "file", "patient", "label", "predicted"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise CompareError(f"{path}: no predictions" + (f" (missing columns {sorted(missing)})" if rows else ""))
    out: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["source"], row["file"])
        if key in out:
            raise CompareError(f"{path}: {key[0]}/{key[1]} is listed twice")
        out[key] = row
    return out


def same_images(a: dict, b: dict, name_a: str, name_b: str) -> list[tuple[str, str]]:
    """The shared image keys in a fixed order; CompareError unless both list the same labelled set."""
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        example = (only_a or only_b)[0]
        raise CompareError(
            f"not the same test images: {len(only_a)} only in {name_a}, {len(only_b)} only in {name_b} "
            f"(e.g. {example[0]}/{example[1]}); compare runs evaluated on the same split files"
        )
    keys = sorted(a)
    for key in keys:
        for column in ("label", "patient"):
            if a[key][column] != b[key][column]:
                raise CompareError(
                    f"{key[0]}/{key[1]}: {column} is {a[key][column]!r} in {name_a} "
                    f"but {b[key][column]!r} in {name_b}"
                )
    return keys


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    b = int(np.sum(correct_a & ~correct_b))  # only A right
    c = int(np.sum(~correct_a & correct_b))  # only B right
    n = b + c
    if n == 0:
        return {
            "only_a_right": b,
            "only_b_right": c,
            "test": "none (no discordant pairs)",
            "statistic": None,
            "p_value": 1.0,
        }
    if n < EXACT_BELOW:
        p = stats.binomtest(min(b, c), n, 0.5).pvalue
        return {
            "only_a_right": b,
            "only_b_right": c,
            "test": "exact binomial (two-sided)",
            "statistic": min(b, c),
            "p_value": float(min(1.0, p)),
        }
    chi2 = (abs(b - c) - 1) ** 2 / n
    return {
        "only_a_right": b,
        "only_b_right": c,
        "test": "chi-square with continuity correction",
        "statistic": float(chi2),
        "p_value": float(stats.chi2.sf(chi2, 1)),
    }


def paired_differences(labels, correct_a, correct_b, patients, resamples: int, seed: int, level: float = LEVEL):
    """B - A in accuracy and per-class sensitivity, each with a patient-bootstrap interval."""
    labels = np.asarray(labels)
    index, n_patients = patient_index(patients)
    weights = patient_draws(n_patients, resamples, seed)[:, index].astype(float)
    diff = correct_b.astype(float) - correct_a.astype(float)
    out = {"accuracy": _difference(diff, np.ones(len(labels), bool), weights, level)}
    for i, c in enumerate(CLASSES):
        out[f"sensitivity_{c}"] = _difference(diff, labels == i, weights, level)
    return out


def _difference(diff: np.ndarray, member: np.ndarray, weights: np.ndarray, level: float) -> dict:
    n = int(member.sum())
    if n == 0:
        return {"images": 0, "difference": None, "interval": None}
    w = weights[:, member]
    totals = w.sum(axis=1)
    resampled = np.divide(w @ diff[member], totals, out=np.zeros(len(w)), where=totals > 0)
    return {"images": n, "difference": float(diff[member].mean()), "interval": percentile(resampled[totals > 0], level)}


def compare(run_a: Path, run_b: Path, split: str, resamples: int = 2000, seed: int = 0) -> dict:
    a, b = read_predictions(run_a, split), read_predictions(run_b, split)
    keys = same_images(a, b, str(run_a), str(run_b))
    labels = np.array([CLASSES.index(a[k]["label"]) for k in keys])
    correct_a = np.array([a[k]["predicted"] == a[k]["label"] for k in keys])
    correct_b = np.array([b[k]["predicted"] == b[k]["label"] for k in keys])
    patients = [(k[0], a[k]["patient"]) for k in keys]
    return {
        "run_a": str(run_a),
        "run_b": str(run_b),
        "split": split,
        "images": len(keys),
        "accuracy_a": float(correct_a.mean()),
        "accuracy_b": float(correct_b.mean()),
        "mcnemar": mcnemar(correct_a, correct_b),
        "differences_b_minus_a": paired_differences(labels, correct_a, correct_b, patients, resamples, seed),
        "interval": {
            "method": "paired percentile bootstrap, resampling patients",
            "level": LEVEL,
            "resamples": resamples,
            "seed": seed,
            "patients": len(set(patients)),
        },
    }


def markdown(result: dict) -> str:
    m = result["mcnemar"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:+.1f}"  # noqa: E731
    lines = [
        f"# Paired comparison on the {result['split']} split ({result['images']} images, the same in both)",
        f"A: `{result['run_a']}` (accuracy {100 * result['accuracy_a']:.1f} %)  ",
        f"B: `{result['run_b']}` (accuracy {100 * result['accuracy_b']:.1f} %)",
        "",
        f"McNemar: only A right {m['only_a_right']}, only B right {m['only_b_right']}; {m['test']}, "
        f"p = {m['p_value']:.4g}",
        "",
        f"| B - A (percentage points) | difference | {100 * LEVEL:.0f} % interval | images |",
        "|:---|:---:|:---:|:---:|",
    ]
    for name, d in result["differences_b_minus_a"].items():
        ci = "n/a" if d["interval"] is None else f"[{pct(d['interval'][0])}, {pct(d['interval'][1])}]"
        lines.append(f"| {name.replace('_', ' ')} | {pct(d['difference'])} | {ci} | {d['images']} |")
    lines += [
        "",
        f"_Intervals: {result['interval']['method']}, {result['interval']['resamples']} resamples, "
        f"seed {result['interval']['seed']}._",
    ]
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "compare.json", result)
    (out / "compare.md").write_text(markdown(result))
