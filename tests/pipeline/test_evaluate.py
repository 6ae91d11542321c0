"""Metrics, exact distributed evaluation, reports, prediction and export."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, hpml

from hpml.shards.schema import parse_fn

pytestmark = pytest.mark.slow  # trains the shared demo model (about a minute) and evaluates it many times

DEMO = REPO / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def trained(demo_run):
    return demo_run


def test_one_and_two_ranks_give_the_same_exact_matrix(trained):
    run = trained / "run"
    n_test = json.loads((trained / "shards" / "manifest.json").read_text())["totals"]["test"]["count"]
    assert n_test % (2 * 32) != 0
    hpml("evaluate", "--run-dir", run, "--split", "test", np=1)
    one = json.loads((run / "eval/test/metrics.json").read_text())
    proc = hpml("evaluate", "--run-dir", run, "--split", "test", "--set", "eval.batch_size=4", np=2)
    two = json.loads((run / "eval/test/metrics.json").read_text())
    assert one["confusion_matrix"] == two["confusion_matrix"] and two["ranks"] == 2
    assert one["count"] == two["count"] == n_test
    with open(run / "eval/test/predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n_test == len({(r["source"], r["file"]) for r in rows})
    assert "### Sensitivity (%)" in proc.stdout and "Research use only" in proc.stdout


def test_reports_render(trained):
    run = trained / "run"
    hpml("evaluate", "--run-dir", run, np=1)  # default split: val
    report = (run / "eval/val/report.md").read_text()
    for heading in ("Sensitivity (%)", "Positive Predictive Value (%)", "Confusion matrix", "Macro F1"):
        assert heading in report
    assert "Validation split" in report
    for png in (run / "eval/val/confusion_matrix.png", run / "curves.png"):
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    metrics = json.loads((run / "eval/val/metrics.json").read_text())
    assert metrics["split"] == "val" and len(metrics["manifest_sha256"]) == 64


def test_predict_sees_exactly_the_shard_input_and_skips_bad_files(trained, tmp_path):
    from hpml.serve.predict import model_input
    from hpml.train.checkpoints import load_trained

    cfg, _, _ = load_trained(trained / "run")
    roots = json.loads((trained / "split" / "split.json").read_text())["roots"]
    parse = parse_fn()
    manifest = json.loads((trained / "shards" / "manifest.json").read_text())
    shard = next(s for s in manifest["shards"] if s["count"])
    checked = 0
    for raw in tf.data.TFRecordDataset(str(trained / "shards" / shard["file"])).take(3):
        rec = parse(raw)
        path = f"{roots[rec['source'].numpy().decode()]}/{rec['filename'].numpy().decode()}"
        stored = tf.io.decode_image(rec["image"], channels=1).numpy()
        assert np.array_equal(model_input(path, cfg), stored), path  # bit for bit
        checked += 1
    assert checked == 3
    images = trained / "raw" / "rsna" / "stage_2_train_images"
    bad = tmp_path / "broken.png"
    bad.write_text("not a png")
    proc = hpml("predict", "--run-dir", trained / "run", images, bad, "--csv", tmp_path / "p.csv", check=False)
    assert proc.returncode == 3 and "1 of " in proc.stderr  # some files could not be classified
    assert "UNREADABLE" in proc.stdout and "not a medical diagnosis" in proc.stdout
    with open(tmp_path / "p.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(list(images.iterdir())) + 1
    assert all(r["predicted"] in ("normal", "pneumonia", "COVID-19") for r in rows if not r["error"])


def test_export_writes_savedmodel_and_contract(trained, tmp_path):
    hpml("export", "--run-dir", trained / "run", "--out", tmp_path / "exp")
    contract = json.loads((tmp_path / "exp" / "preprocessing.json").read_text())
    assert contract["output"]["softmax_over"] == ["normal", "pneumonia", "COVID-19"]
    loaded = tf.saved_model.load(str(tmp_path / "exp" / "saved_model"))
    x = tf.zeros([1, 64, 64, 1], tf.uint8)
    out = loaded.signatures["serving_default"](image=x)
    assert list(out.values())[0].shape == (1, 3)


def test_checkpoint_choices_last_and_path(trained):
    run = trained / "run"
    hpml("evaluate", "--run-dir", run, "--checkpoint", "last", np=1)
    last = json.loads((run / "eval/val/metrics.json").read_text())
    assert "ckpt-180" in last["checkpoint"]  # 6 epochs x 30 steps
    hpml("evaluate", "--run-dir", run, "--set", "eval.checkpoint=last", np=1)  # the config's choice, no option
    assert json.loads((run / "eval/val/metrics.json").read_text())["checkpoint"] == last["checkpoint"]
    hpml("evaluate", "--run-dir", run, "--checkpoint", run / "checkpoints" / "best.h5", np=1)
    assert json.loads((run / "eval/val/metrics.json").read_text())["checkpoint"].endswith("best.h5")
    proc = hpml("evaluate", "--run-dir", run, "--checkpoint", run / "nope.h5", np=1, check=False)
    assert proc.returncode != 0 and "nope.h5" in proc.stderr


def test_report_has_intervals_curves_and_calibration_from_all_ranks(trained):
    from sklearn.metrics import average_precision_score, roc_auc_score
    from statsmodels.stats.proportion import proportion_confint

    run = trained / "run"
    hpml("evaluate", "--run-dir", run, "--split", "test", np=2)
    out = run / "eval/test"
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    classes = metrics["classes"]
    labels = np.array([classes.index(r["label"]) for r in rows])
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    assert len(rows) == metrics["count"] == 31  # both ranks' images, each once
    for i, c in enumerate(classes):  # the areas come from every rank's predictions, exactly
        assert np.isclose(metrics["areas"]["roc_auc"][c], roc_auc_score(labels == i, probs[:, i]), atol=1e-9)
        assert np.isclose(
            metrics["areas"]["average_precision"][c], average_precision_score(labels == i, probs[:, i]), atol=1e-9
        )
        cm = np.array(metrics["confusion_matrix"])
        assert np.allclose(
            metrics["intervals"]["sensitivity"][c], proportion_confint(cm[i, i], cm[i].sum(), method="wilson")
        )
    boot = metrics["bootstrap"]
    assert boot["resamples"] == 2000 and boot["patients"] < 31  # resampled by patient (some have 2 films)
    assert boot["accuracy"][0] <= metrics["accuracy"] <= boot["accuracy"][1]
    assert 0.0 <= metrics["calibration"]["ece"] <= 1.0 and sum(metrics["calibration"]["count"]) == 31
    report = (out / "report.md").read_text()
    for text in ("95 % CI", "Wilson score", "resampling patients", "ROC AUC", "Expected calibration error"):
        assert text in report, text
    for png in ("roc_pr.png", "reliability.png", "confusion_matrix.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG"), png
    strict = {"parse_constant": lambda c: pytest.fail(f"not JSON: {c}")}  # NaN / Infinity
    found = json.loads((out / "curves.json").read_text(), **strict)
    json.loads((out / "metrics.json").read_text(), **strict)
    assert found["COVID-19"]["positives"] == 10 and found["COVID-19"]["roc"]["fpr"][0] == 0.0


def test_compare_two_runs_on_the_same_test_images(trained, tmp_path):
    import shutil

    run_a, run_b = trained / "run", tmp_path / "run-b"
    hpml("evaluate", "--run-dir", run_a, "--split", "test", np=1)
    shutil.copytree(run_a, run_b, ignore=shutil.ignore_patterns("eval"))
    hpml("evaluate", "--run-dir", run_b, "--split", "test", "--checkpoint", "last", "--set", "eval.batch_size=5", np=2)
    proc = hpml("evaluate", "--compare", run_a, run_b, "--split", "test", "--out", tmp_path / "cmp")
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert result["images"] == 31 and "McNemar" in proc.stdout
    assert set(result["differences_b_minus_a"]) == {
        "accuracy",
        "sensitivity_normal",
        "sensitivity_pneumonia",
        "sensitivity_COVID-19",
    }
    # A run evaluated on a different split is refused, not compared.
    hpml("evaluate", "--run-dir", run_b, "--split", "val", np=1)
    shutil.rmtree(run_b / "eval" / "test")
    shutil.copytree(run_b / "eval" / "val", run_b / "eval" / "test")
    proc = hpml("evaluate", "--compare", run_a, run_b, "--split", "test", check=False)
    assert proc.returncode == 2 and "not the same test images" in proc.stderr


@pytest.fixture()
def untrained_run(tmp_path):
    """A run folder with a config and (untrained) best weights: enough for predict's exit rules."""
    from hpml.core.config import load_config, save_config
    from hpml.models.build import build_model

    cfg = load_config(DEMO)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    build_model(cfg.model, cfg.data.image_size).save_weights(str(run / "checkpoints" / "best.h5"))
    return run


def test_predict_exits_nonzero_when_nothing_is_classified(untrained_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = hpml("predict", "--run-dir", untrained_run, empty, check=False)
    assert proc.returncode == 1 and "no file could be classified (0 found)" in proc.stderr
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a PNG cut short
    proc = hpml("predict", "--run-dir", untrained_run, bad, tmp_path / "missing.dcm", check=False)
    assert proc.returncode == 1 and proc.stdout.count("UNREADABLE") == 2


def test_predict_explain_writes_one_overlay_per_file(trained, tmp_path):
    images = sorted((trained / "raw" / "covid-chestxray-dataset" / "images").iterdir())[:2]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    same_name = [tmp_path / d / "film.png" for d in ("a", "b")]
    for src, dst in zip(images, same_name, strict=True):
        dst.write_bytes(src.read_bytes()) if src.suffix == ".png" else dst.write_bytes(_as_png(src))
    proc = hpml("predict", "--run-dir", trained / "run", *same_name, "--explain", "--explain-dir", tmp_path / "cam")
    written = sorted(p.name for p in (tmp_path / "cam").iterdir())
    assert written == ["film-2.gradcam.png", "film.gradcam.png"] and "2 PNG files" in proc.stdout
    assert all((tmp_path / "cam" / n).read_bytes().startswith(b"\x89PNG") for n in written)


def _as_png(path):
    import cv2

    from hpml.imaging import read_gray

    return cv2.imencode(".png", read_gray(path))[1].tobytes()


def test_export_carries_a_model_card_with_intervals(trained, tmp_path):
    run = trained / "run"
    hpml("evaluate", "--run-dir", run, "--split", "test", np=1)
    hpml("export", "--run-dir", run, "--out", tmp_path / "exp")
    card = (tmp_path / "exp" / "MODEL_CARD.md").read_text()
    for text in (
        "Data and split policy",
        "patient-level",
        "95 % CI",
        "Wilson score",
        "Intended use",
        "Out of scope",
        "not a medical diagnosis",
        "ROC AUC",
    ):
        assert text in card, text
    data = json.loads((tmp_path / "exp" / "model_card.json").read_text())
    assert data["evaluations"]["test"]["same_checkpoint_as_export"] is True
    assert data["evaluations"]["test"]["intervals"]["sensitivity"]["COVID-19"] is not None
