"""Provenance under the real launcher: every attempt of train, and each preprocess and evaluate
run, leaves one record; a resume on other software names the change in rank 0's log."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, hpml
from shardmaker import write_shards
from trainutil import SMALL, run, train_cmd

from hpml.core.provenance import read_records
from hpml.core.runfiles import PROVENANCE, RunDir
from preprocess.covidx.build import build

pytestmark = pytest.mark.slow  # two short trainings, an evaluation and a preprocessing: about a minute

LAYOUT = {"train-00000-00000.tfrecord": [0, 1, 2] * 4, "val-00000-00000.tfrecord": [0, 1, 2] * 2}


def test_each_training_attempt_and_the_evaluation_leave_a_record(tmp_path):
    shards, run_dir = tmp_path / "shards", tmp_path / "run"
    write_shards(shards, LAYOUT)
    run_ = RunDir(run_dir)
    code, log = run(train_cmd(shards, run_dir, *SMALL, "train.epochs=1", np=1))
    assert code == 0, log
    first = run_.provenance.read_text()
    # Pretend the first attempt ran on another numpy: the resumed attempt must say so, by name.
    rec = json.loads(first)
    numpy = next(p for p in rec["packages"] if p.startswith("numpy=="))
    rec["packages"] = [p if p != numpy else "numpy==1.0.0" for p in rec["packages"]]
    run_.provenance.write_text(json.dumps(rec) + "\n")
    code, log = run(train_cmd(shards, run_dir, *SMALL, "train.epochs=2", np=1))
    assert code == 0, log
    assert "resumed from" in log
    warning = next(line for line in log.splitlines() if "software changed since attempt 1" in line)
    assert "[0/1] WARNING" in warning and f"numpy 1.0.0 -> {numpy.split('==')[1]}" in warning
    records = read_records(run_.provenance)
    assert [r["attempt"] for r in records] == [1, 2] and [r["stage"] for r in records] == ["train"] * 2
    last = records[-1]
    assert "train.epochs=2" in last["overrides"] and "train" in last["argv"]
    assert last["horovod"]["mpi_built"] is not None and "is_cuda_build" in last["tensorflow"]  # imported: known
    assert last["mpi"] and last["hpml"]["commit"] != "unknown"  # a checkout: its git commit
    versions = json.loads(run_.versions.read_text())  # its old readers' keys, of the latest attempt
    assert "horovod" in versions["packages"] and versions["attempts"] == 2

    hpml("evaluate", "--run-dir", run_dir, "--split", "val", np=1)
    evaluated = read_records(run_.eval("val") / PROVENANCE)
    assert len(evaluated) == 1 and evaluated[0]["stage"] == "evaluate" and "tensorflow" in evaluated[0]
    assert read_records(run_.provenance) == records  # evaluation does not touch training's record


def test_preprocessing_leaves_one_record_beside_the_manifest(synth_corpus, tmp_path):
    build(sorted(synth_corpus.iterdir()), tmp_path / "split")
    out = tmp_path / "shards"
    demo = REPO / "configs" / "demo.yaml"
    args = ("preprocess", "--config", demo, "--split-dir", tmp_path / "split", "--out", out)
    hpml(*args, "--set", "data.image_size=32", np=1)
    records = read_records(out / PROVENANCE)
    assert len(records) == 1 and records[0]["stage"] == "preprocess" and (out / "manifest.json").is_file()
    assert records[0]["overrides"] == ["data.image_size=32"] and records[0]["mpi"]
