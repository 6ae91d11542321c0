"""Covid19-HPML's experiment (configs/covidnet-resnet50v2-512.yaml) on 2 ranks at a small size.

The seed's own rules, computed here from its code and not from hpml's: a batch of 8 holds ONE
COVID-19 image (data.py:166-167, a position of a non-COVID batch replaced), an epoch is
ceil(non-COVID / batch) batches (data.py:144-146); the per-epoch metrics are those of the saved
predictions, counted with scikit-learn. ImageNet weights arrive through `hpml weights fetch`
from a local HTTP server (the real file is 94 MB and the machine has no internet), in a file
with the layout Keras publishes.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf
from conftest import MPI_ENV, REPO, WORKERS, hpml, sets
from shardmaker import write_shards
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score
from trainutil import history

from hpml.core.config import CLASSES
from hpml.models import weights_cache
from hpml.slurm import sweep_report

SEED = REPO / "configs" / "covidnet-resnet50v2-512.yaml"
SIZE = 32  # ResNet50V2's smallest input
TRAIN = {
    "train-00000-00000.tfrecord": [0] * 12 + [1] * 10 + [2] * 3,
    "train-00001-00000.tfrecord": [1] * 8 + [0] * 10 + [2] * 3,
}
VAL = {"val-00000-00000.tfrecord": [0, 1, 2] * 3, "val-00001-00000.tfrecord": [2, 0, 1, 0]}
SMALL = [f"data.image_size={SIZE}", "eval.bootstrap_resamples=0"]
NO_AUGMENT = [
    f"train.augment.{k}={v}" for k, v in (("rotation", 0), ("shift", 0), ("flip", "false"), ("brightness", 0))
]
EPOCHS = 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, dict[int, int]]:
    out = tmp_path_factory.mktemp("seed-shards")
    return out, write_shards(out, {**TRAIN, **VAL}, size=SIZE)


@pytest.fixture(scope="module")
def imagenet_cache(tmp_path_factory) -> Path:
    """`hpml weights fetch resnet50v2` from a local mirror in Keras' layout, into a fresh cache."""
    root = tmp_path_factory.mktemp("mirror")
    item = weights_cache.TABLE["resnet50v2"]
    served = root / item.path
    served.parent.mkdir(parents=True)
    tf.keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)).save_weights(
        str(served)
    )
    table = {"resnet50v2": weights_cache.WeightsFile(item.path, hashlib.md5(served.read_bytes()).hexdigest())}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        cache = tmp_path_factory.mktemp("weights")
        path = weights_cache.fetch("resnet50v2", cache, f"http://127.0.0.1:{httpd.server_address[1]}/", table)
    finally:
        httpd.shutdown()
    assert path == cache / item.name and path.read_bytes() == served.read_bytes()
    return cache


@pytest.mark.parametrize("global_batch", [None, 8], ids=["batch-per-rank", "global-batch"])
def test_every_batch_holds_the_seeds_covid_share(shards, tmp_path, global_batch):
    """Per rank, batch 8 with one COVID-19 image each (hpml's rule on 2 ranks: a global batch of 16);
    or the seed's own `--bs 8` as train.global_batch: 4 per rank, and ONE COVID-19 image in every
    global batch of 8, on either rank."""
    out = tmp_path / "census"
    out.mkdir()
    extra = [f"train.global_batch={global_batch or 'null'}"]
    cmd = [sys.executable, str(WORKERS / "batch_census.py"), SEED, shards[0], out, 2, *SMALL, *NO_AUGMENT, *extra]
    proc = subprocess.run(
        ["mpirun", "-np", "2", *map(str, cmd)],
        env={**os.environ, **MPI_ENV, "PYTHONPATH": f"{WORKERS.parent}:{WORKERS}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    labels_of, n_train = shards[1], sum(map(len, TRAIN.values()))
    non_covid = {i for i, y in labels_of.items() if y != 2 and i < n_train}
    covid = {i for i, y in labels_of.items() if y == 2 and i < n_train}
    g = global_batch or 8 * 2
    seed_steps = math.ceil(len(non_covid) / g)  # data.py:144-146, ceil(non-COVID / batch), over the global batch
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in range(2):
        seen = []
        for census in ranks:
            assert census["steps"] == seed_steps and len(census["epochs"][epoch]) == seed_steps
            for batch in census["epochs"][epoch]:
                assert len(batch["labels"]) == g // 2
                assert [labels_of[i] for i in batch["ids"]] == batch["labels"]
                assert {i for i, y in zip(batch["ids"], batch["labels"], strict=True) if y == 2} <= covid
                seen += [i for i, y in zip(batch["ids"], batch["labels"], strict=True) if y != 2]
        for step in range(seed_steps):  # data.py:166-167: one COVID-19 image per batch of 8
            global_labels = [y for census in ranks for y in census["epochs"][epoch][step]["labels"]]
            assert global_labels.count(2) == g // 8
        if global_batch:  # 5 global batches of 7 non-COVID images: 35 of the 40, none twice, as the seed
            assert len(seen) == len(set(seen)) == seed_steps * (g - 1) and set(seen) <= non_covid
        else:  # 3 steps x 7 on each rank: every non-COVID image, two of them twice
            assert set(seen) == non_covid


@pytest.mark.slow  # a 3-epoch ResNet50V2 run on 2 ranks and its evaluation: about a minute
def test_the_seed_recipe_trains_selects_and_reports_per_class(shards, imagenet_cache, tmp_path):
    sweep = tmp_path / "sweep"  # a one-point sweep, so `hpml sweep report` reads the run
    run = sweep / "p000"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"points": [{"index": 0, "overrides": []}], "epochs": {"0": EPOCHS}}))
    args = ["train", "--config", SEED, "--shards", shards[0], "--run-dir", run]
    proc = hpml(
        *args, *sets(*SMALL, f"train.epochs={EPOCHS}"), np=2, timeout=900, env={"HPML_WEIGHTS_DIR": str(imagenet_cache)}
    )
    log = proc.stdout + proc.stderr
    assert f"model.weights imagenet: loaded {imagenet_cache}" in log
    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    assert log.count("sens/ppv normal ") == EPOCHS

    # best.h5 is the epoch the sweep report names, and the weights of that epoch's own file
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    metric, table = sweep_report.rows(sweep, None)
    assert metric == "val_loss" and table[0]["best_epoch"] == best["epoch"]
    assert best["value"] == min(float(r["val_loss"]) for r in rows)
    epoch_files = sorted((run / "checkpoints" / "epochs").iterdir())
    assert [p.name for p in epoch_files] == [
        f"epoch-{e + 1:03d}-val_loss-{float(r['val_loss']):.4f}.h5" for e, r in enumerate(rows)
    ]
    assert _weights(run / "checkpoints" / "best.h5") == _weights(epoch_files[best["epoch"]])

    # the best epoch's per-class numbers are those of its saved predictions
    hpml("evaluate", "--run-dir", run, "--split", "val", "--checkpoint", "best", *sets(*SMALL), np=2)
    with open(run / "eval" / "val" / "predictions.csv") as fh:
        preds = list(csv.DictReader(fh))
    truth = [CLASSES.index(p["label"]) for p in preds]
    guess = [int(np.argmax([float(p[f"p_{c}"]) for c in CLASSES])) for p in preds]
    row = rows[best["epoch"]]
    cm = confusion_matrix(truth, guess, labels=[0, 1, 2])
    assert row["val_confusion"] == "/".join(" ".join(map(str, r)) for r in cm.tolist())
    sens = recall_score(truth, guess, labels=[0, 1, 2], average=None, zero_division=0)
    ppv = precision_score(truth, guess, labels=[0, 1, 2], average=None, zero_division=0)
    for i, c in enumerate(CLASSES):
        assert float(row[f"val_sensitivity_{c}"]) == pytest.approx(sens[i], abs=1e-12)
        assert float(row[f"val_ppv_{c}"]) == pytest.approx(ppv[i], abs=1e-12)
    # COVID-Net's macro F1 is the mean of per-class F1 (sklearn's average='macro')
    f1 = f1_score(truth, guess, labels=[0, 1, 2], average="macro", zero_division=0)
    assert float(row["val_macro_f1"]) == pytest.approx(f1, abs=1e-12)
    tags = set()
    for event_file in (run / "tensorboard").rglob("events.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags |= {v.tag for v in event.summary.value}
    assert {"val_macro_f1", "val_sensitivity_COVID-19", "val_ppv_COVID-19", "val_loss"} <= tags


def _weights(path: Path) -> list[bytes]:
    """Every array of a Keras .h5 weights file, in file order."""
    arrays = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, obj: arrays.append(obj[()].tobytes()) if isinstance(obj, h5py.Dataset) else None)
    return arrays
