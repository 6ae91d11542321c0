"""Metrics, exact distributed evaluation, reports, prediction and export."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, hpml
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

from hpml.metrics import confusion, from_confusion
from hpml.records import parse_fn
from preprocess.covidx import BuildOptions, build

DEMO = REPO / "configs" / "demo.yaml"
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    hpml("synth", "--out", root / "raw", "--per-class", "40", "--seed", "4")
    # 31 test images: not a multiple of ranks x batch, so a dropped remainder would show.
    build(sorted((root / "raw").iterdir()), root / "split",
          BuildOptions(seed=1, test_per_class={"normal": 10, "pneumonia": 10, "COVID-19": 11}))  # fmt: skip
    hpml("preprocess", "--config", DEMO, "--split-dir", root / "split", "--out", root / "shards", np=2)
    hpml("train", "--config", DEMO, "--shards", root / "shards", "--run-dir", root / "run",
         "--set", "train.epochs=2", "--set", "train.steps_per_epoch=10", np=2)  # fmt: skip
    return root


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
    from hpml.checkpoints import load_trained
    from hpml.predict import model_input

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
    proc = hpml("predict", "--run-dir", trained / "run", images, bad, "--csv", tmp_path / "p.csv")
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
    assert "ckpt-20" in last["checkpoint"]  # 2 epochs x 10 steps
    hpml("evaluate", "--run-dir", run, "--checkpoint", run / "checkpoints" / "best.h5", np=1)
    assert json.loads((run / "eval/val/metrics.json").read_text())["checkpoint"].endswith("best.h5")
    proc = hpml("evaluate", "--run-dir", run, "--checkpoint", run / "nope.h5", np=1, check=False)
    assert proc.returncode != 0 and "nope.h5" in proc.stderr
