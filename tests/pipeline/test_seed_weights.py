"""The seed's trained weights in hpml: `hpml weights import`, `predict --config --checkpoint`, `--init-from`.

The seed's file is made as the seed made it (tests/seedmodel.py: model.py's layers, saved through
multi_gpu_model by ModelCheckpoint(save_weights_only)); the seed's input path is its own
(cv2.imread -> BGR float / 255, data.py:293-297) and hpml's is `hpml predict` on the same PNGs.
"""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from conftest import DEMO, REPO, hpml, sets
from seedmodel import multi_gpu_model, seed_model
from trainutil import SMALL, run, train_cmd

from hpml.core.config import CLASSES

SEED = REPO / "configs" / "covidnet-resnet50v2-512.yaml"
SIZE = 32
# Probabilities in predict's CSV have 6 decimals; the models differ by float rounding (~2e-7).
TOL = 1e-6


def test_seed_hdf5_predicts_as_the_seed_model(tmp_path):
    seed = seed_model(SIZE)
    seed_file = tmp_path / "cp-04-0.93.hdf5"
    multi_gpu_model(seed).save_weights(str(seed_file))
    rng = np.random.default_rng(7)
    images = []
    for i in range(4):
        path = tmp_path / "images" / f"cxr{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
        images.append(path)
    seed_probs = seed(np.stack([cv2.imread(str(p)) for p in images]).astype(np.float32) / 255.0).numpy()
    # PNG records: lossless, so hpml's model sees the file's own pixels
    config = ["--config", SEED, *sets(f"data.image_size={SIZE}", "preprocess.encoding=png")]

    proc = hpml("weights", "import", seed_file, "--out", tmp_path / "seed.h5", *config)
    assert " 0 mismatched, 0 unfilled" in proc.stdout and "FC_3 -> head_out" in proc.stdout

    for weights in (tmp_path / "seed.h5", seed_file):  # the converted file, and the seed's own file directly
        out = tmp_path / f"{weights.stem}.csv"
        hpml("predict", *config, "--checkpoint", weights, "--csv", out, *images)
        with open(out) as fh:
            rows = list(csv.DictReader(fh))
        assert [r["file"] for r in rows] == list(map(str, images))
        probs = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
        assert np.abs(probs - seed_probs).max() < TOL, np.abs(probs - seed_probs).max()
        assert np.abs(seed_probs - seed_probs.mean(0)).max() > 1e-3  # distinct images give distinct outputs


def test_predict_without_a_run_needs_a_config_and_a_file(tmp_path):
    proc = hpml("predict", "--checkpoint", tmp_path / "w.h5", tmp_path, check=False)
    assert proc.returncode == 2 and "--config CFG with --checkpoint FILE" in proc.stderr


@pytest.mark.slow  # three trainings and two 2-rank evaluations: about a minute
def test_init_from_starts_a_new_run_and_a_resumed_run_ignores_it(small_data, tmp_path):
    shards = small_data / "shards"
    code, log = run(train_cmd(shards, tmp_path / "a", *SMALL[1:], "train.epochs=1", np=0))
    assert code == 0, log
    start = tmp_path / "a" / "checkpoints" / "best.h5"
    cmd = train_cmd(shards, tmp_path / "b", *SMALL[1:], "train.epochs=1", np=0, args=["--init-from", start])
    code, log = run(cmd)
    assert code == 0 and f"model.init_from: {start} (hpml weights): " in log and " 0 mismatched" in log, log
    code, log = run([*cmd[:-2], "--set", "train.epochs=2"])  # resumes b's checkpoint: the file is not read again
    assert code == 0 and "resumed from ckpt-" in log and "model.init_from" not in log, log

    # A weights file with its config evaluates as its run does
    hpml("evaluate", "--run-dir", tmp_path / "a", "--split", "val", np=2)
    alone = ["--checkpoint", start, "--config", DEMO, "--shards", shards, "--out", tmp_path / "alone"]
    hpml("evaluate", *alone, "--split", "val", np=2)
    by_run, by_file = (
        json.loads((d / "eval" / "val" / "metrics.json").read_text()) for d in (tmp_path / "a", tmp_path / "alone")
    )
    assert by_file["checkpoint"] == str(start) and by_file["count"] > 0
    assert {k: v for k, v in by_file.items() if k != "checkpoint"} == {
        k: v for k, v in by_run.items() if k != "checkpoint"
    }
