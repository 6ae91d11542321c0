"""hpml status and hpml efficiency on a real (one-rank) training run, with no SLURM anywhere."""

import csv
import json
import os

import pytest
import yaml
from conftest import REPO, hpml, sets

from preprocess.covidx.build import build
from preprocess.synth.corpus import synth

DEMO = REPO / "configs" / "demo.yaml"
NO_SLURM = {"PATH": "/usr/bin:/bin"}  # hpml runs as sys.executable -m hpml.cli; these runs have no job ids to ask about


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real one-rank training run, no SLURM anywhere."""
    root = tmp_path_factory.mktemp("status")
    synth(root / "raw", per_class=10, seed=2)
    build(sorted((root / "raw").iterdir()), root / "split")
    hpml("preprocess", "--config", DEMO, "--split-dir", root / "split", "--out", root / "shards")
    overrides = sets("train.epochs=2", "train.steps_per_epoch=3")
    hpml("train", "--config", DEMO, "--shards", root / "shards", "--run-dir", root / "run", *overrides)
    return root / "run"


def test_status_of_a_plain_run_directory_without_slurm(trained):
    doc = json.loads(hpml("status", trained, "--json", env=NO_SLURM).stdout)
    p = doc["progress"]
    assert doc["kind"] == "run" and doc["jobs"] == []
    assert (p["phase"], p["epoch"], p["epochs"], p["epochs_done"], p["global_step"]) == ("done", 2, 2, 2, 6)
    assert p["images_per_s"] > 0 and p["job"] == "job=none restart=0" and p["preempted_marker"] is None
    with (trained / "history.csv").open() as fh:
        last = list(csv.DictReader(fh))[-1]
    assert p["last"]["val_accuracy"] == pytest.approx(float(last["val_accuracy"]))
    text = hpml("status", trained, "--watch", "1", env=NO_SLURM).stdout  # nothing live: one look, then done
    assert "no SLURM jobs recorded" in text and "training: done epoch 2/2 step 0/3" in text


def test_efficiency_without_accounting_uses_the_ranks_records(trained):
    out = hpml("efficiency", trained, env=NO_SLURM).stdout
    doc = json.loads((trained / "efficiency.json").read_text())
    ranks = doc["measured_by_ranks"]
    assert (
        ranks["runs"] == 1
        and ranks["rank_records"] == 1
        and 0 < ranks["cpu_efficiency"] <= len(os.sched_getaffinity(0))
        and ranks["max_rss_mb"] > 100
        and ranks["gpu_hours"] == 0
    )
    assert "measured by the ranks: 1 run(s)" in out and "not exposed" in out
    assert yaml.safe_load((trained / "config.yaml").read_text())["train"]["epochs"] == 2
