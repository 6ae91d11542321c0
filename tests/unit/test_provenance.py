"""Provenance (hpml.core.provenance): one record per attempt, appended; changes named on resume;
split.json's upstream version of each source."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import types
from pathlib import Path

import pytest

import hpml
from hpml.core import provenance
from hpml.core.provenance import append, read_records, record, upstream
from hpml.train.provenance import write_versions
from preprocess.covidx.build import build
from preprocess.covidx.published import Published, import_published

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
ARGV = ["hpml", "train", "--config", "c.yaml", "--set", "train.lr=1e-3", "--set=train.epochs=2"]


def git_repo(folder: Path) -> str:
    """Make `folder` a clone-like git work tree with everything committed; returns the commit."""
    subprocess.run([*GIT, "init", "-q", str(folder)], check=True)
    subprocess.run([*GIT, "-C", str(folder), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(folder), "commit", "-qm", "upstream"], check=True)
    return subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture()
def no_stack(monkeypatch):
    """A process that has imported neither TensorFlow, Horovod nor mpi4py (whatever pytest loaded)."""
    for name in ("tensorflow", "horovod", "horovod.tensorflow", "mpi4py.MPI"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_a_record_holds_version_packages_python_and_command(no_stack):
    rec = record("train", env={}, argv=ARGV)
    assert rec["stage"] == "train" and rec["time"].endswith("+00:00")
    assert rec["hpml"]["version"] == hpml.__version__ and rec["hpml"]["commit"]
    names = [p.split("==")[0] for p in rec["packages"]]
    assert rec["packages"] == sorted(rec["packages"]) and len(names) == len(set(names))
    assert {"numpy", "pyyaml"} <= set(names)  # every distribution, not a chosen few
    assert rec["python"] == platform.python_version() and rec["platform"]
    assert rec["argv"] == ARGV and rec["overrides"] == ["train.lr=1e-3", "train.epochs=2"]
    assert record("train", overrides=["a=1"], env={}, argv=ARGV)["overrides"] == ["a=1"]
    assert rec["container"] is None and rec["slurm"] is None
    assert "tensorflow" not in rec and "horovod" not in rec  # not imported: nothing claimed
    json.dumps(rec)  # one JSON line


def test_tensorflow_horovod_and_mpi_only_when_the_process_imported_them(no_stack, monkeypatch):
    tf = types.ModuleType("tensorflow")
    tf.__version__ = "2.15.1"
    build_info = {"cuda_version": "12.2", "cudnn_version": "8", "is_cuda_build": True, "msvcp": "x"}
    tf.sysconfig = types.SimpleNamespace(get_build_info=lambda: build_info)
    hvd = types.ModuleType("horovod.tensorflow")
    hvd.mpi_built, hvd.nccl_built, hvd.gloo_built = (lambda: True), (lambda: 21703), (lambda: False)
    mpi = types.SimpleNamespace(Get_library_version=lambda: "Open MPI v4.1.4, package: x\nmore\n")
    for name, module in (("tensorflow", tf), ("horovod", types.SimpleNamespace(__version__="0.28.1"))):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", hvd)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", mpi)
    rec = record("train", env={}, argv=[])
    assert rec["tensorflow"] == {
        "version": "2.15.1",
        "cuda_version": "12.2",
        "cudnn_version": "8",
        "is_cuda_build": True,
    }
    assert rec["horovod"] == {"version": "0.28.1", "mpi_built": True, "nccl_built": 21703, "gloo_built": False}
    assert rec["mpi"] == "Open MPI v4.1.4, package: x"


def test_gpus_from_nvidia_smi_where_it_exists(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200, 550.54.15'\necho 'NVIDIA H200, 550.54.15'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert provenance.gpus() == [{"name": "NVIDIA H200", "driver": "550.54.15"}] * 2
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: no GPUs, no error
    assert provenance.gpus() == []


def test_container_and_slurm_job_from_the_environment(no_stack):
    env = {
        "APPTAINER_CONTAINER": "/images/hpml-gpu.sif",
        "APPTAINER_NAME": "hpml-gpu.sif",
        "SLURM_JOB_ID": "1043",
        "SLURM_ARRAY_JOB_ID": "1040",
        "SLURM_ARRAY_TASK_ID": "3",
        "SLURM_RESTART_COUNT": "2",
        "SLURM_JOB_NODELIST": "gpu[01-02]",
    }
    rec = record("train", env=env, argv=[])
    assert rec["container"] == {"image": "/images/hpml-gpu.sif", "name": "hpml-gpu.sif"}
    assert rec["slurm"] == {
        "identity": "job=1040_3 restart=2",
        "job": "1043",
        "array_job": "1040",
        "array_task": "3",
        "restart": 2,
        "nodelist": "gpu[01-02]",
    }
    assert record("x", env={"SINGULARITY_CONTAINER": "/old.sif"}, argv=[])["container"]["image"] == "/old.sif"


def test_hpml_commit_from_a_checkout_else_the_build_else_unknown(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("1")
    commit = git_repo(tmp_path)
    assert provenance.hpml_build(tmp_path) == {"version": hpml.__version__, "commit": commit, "dirty": False}
    (tmp_path / "f").write_text("2")
    assert provenance.hpml_build(tmp_path)["dirty"] is True
    installed = tmp_path / "site-packages"  # no .git: a wheel or a container's copy
    installed.mkdir()
    monkeypatch.setitem(sys.modules, "hpml._build", types.SimpleNamespace(COMMIT="abc123"))
    assert provenance.hpml_build(installed)["commit"] == "abc123"
    monkeypatch.setitem(sys.modules, "hpml._build", None)  # no hpml/_build.py: import fails
    assert provenance.hpml_build(installed)["commit"] == "unknown"


def test_attempts_are_appended_never_rewritten(tmp_path, no_stack):
    path = tmp_path / "provenance.jsonl"
    append(path, record("train", env={}, argv=["first"]))
    first = path.read_text()
    with path.open("a") as fh:
        fh.write('{"stage": "train", "cut sho')  # a crash mid-line leaves a torn line
    append(path, record("train", env={}, argv=["second"]))
    assert path.read_text().startswith(first)  # the first attempt's line, byte for byte
    records = read_records(path)
    assert [r["argv"] for r in records] == [["first"], ["second"]] and [r["attempt"] for r in records] == [1, 2]


def test_a_resume_on_other_software_warns_naming_the_package(tmp_path, no_stack, caplog):
    path = tmp_path / "provenance.jsonl"
    now = record("train", env={}, argv=[])
    numpy = next(p for p in now["packages"] if p.startswith("numpy=="))
    before = {**now, "packages": [p if p != numpy else "numpy==1.0.0" for p in now["packages"]] + ["gone==9"]}
    before["hpml"] = {**now["hpml"], "commit": "0ld"}
    path.write_text(json.dumps({**before, "attempt": 1}) + "\n")
    with caplog.at_level(logging.WARNING, logger="hpml.core.provenance"):
        said = append(path, now)
    new = numpy.split("==")[1]
    assert f"numpy 1.0.0 -> {new}" in said and "gone 9 -> (absent)" in said
    assert f"hpml commit 0ld -> {now['hpml']['commit']}" in said
    assert f"numpy 1.0.0 -> {new}" in caplog.text and "since attempt 1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hpml.core.provenance"):
        assert append(path, record("train", env={}, argv=[])) == []  # same software: silent
    assert caplog.text == ""


def test_training_appends_an_attempt_and_keeps_versions_json_for_its_readers(tmp_path, no_stack):
    write_versions(tmp_path / "versions.json")
    write_versions(tmp_path / "versions.json")
    assert [r["attempt"] for r in read_records(tmp_path / "provenance.jsonl")] == [1, 2]
    versions = json.loads((tmp_path / "versions.json").read_text())
    assert "numpy" in versions["packages"] and versions["attempts"] == 2 and versions["git_commit"]


def test_upstream_is_the_commit_of_a_clone_else_the_metadata_hash(tmp_path):
    clone, plain = tmp_path / "clone", tmp_path / "plain"
    for folder in (clone, plain):
        folder.mkdir()
        (folder / "metadata.csv").write_text("a,b\n")
    commit = git_repo(clone)
    got = upstream(clone, {"metadata.csv": "d" * 64})
    assert got["git_commit"] == commit and got["git_dirty"] is False and len(got["git_tree"]) == 40
    assert upstream(plain, {"metadata.csv": "d" * 64})["metadata_sha256"] == got["metadata_sha256"]
    assert "git_commit" not in upstream(plain, {"metadata.csv": "d" * 64})
    assert upstream(plain, {"metadata.csv": "e" * 64})["metadata_sha256"] != got["metadata_sha256"]
    (clone / "metadata.csv").write_text("a,b\n1,2\n")
    assert upstream(clone, {})["git_dirty"] is True
    (clone / "untracked").mkdir()  # a folder inside a clone that the clone does not hold: not its version
    assert "git_commit" not in upstream(clone / "untracked", {})


def test_split_json_records_each_sources_upstream(corpus_copy, tmp_path):
    clone = corpus_copy / "covid-chestxray-dataset"  # the ieee8023 source, as a git clone
    commit = git_repo(clone)
    meta = build(sorted(corpus_copy.iterdir()), tmp_path / "split")
    saved = json.loads((tmp_path / "split" / "split.json").read_text())["upstream"]
    assert saved == meta["upstream"] and set(saved) == set(meta["roots"])
    assert saved["covid-chestxray-dataset"]["git_commit"] == commit
    assert saved["covid-chestxray-dataset"]["git_dirty"] is False
    for name, found in saved.items():
        read = sorted(meta["sources"][name]["csv_sha256"])
        assert found["metadata_files"] == read and len(found["metadata_sha256"]) == 64
        assert name == "covid-chestxray-dataset" or "git_commit" not in found  # not clones: the hash only


def test_imported_split_records_the_published_lists(tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text("p1 a.png normal\np2 b.png COVID-19\n")
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "img" / name).write_bytes(b"x")
    given = Published(listing, tmp_path / "img")
    meta = import_published(given, given, tmp_path / "s")
    assert set(meta["upstream"]) == {"covidx-train", "covidx-test"}
    assert meta["upstream"]["covidx-test"]["metadata_files"] == ["train.txt"]
    assert json.loads((tmp_path / "s" / "split.json").read_text())["upstream"] == meta["upstream"]
