"""SLURM jobs against a real SLURM cluster started on this machine (profile `local`)."""

import json
import re
import subprocess
import time

import pytest
import yaml
from conftest import REPO, hpml
from slurmcluster import LocalSlurm, SlurmUnavailable

from hpml.preemption import MARKER, REQUEUE_EXIT_CODE
from preprocess.covidx import build
from preprocess.synth import synth

DEMO = REPO / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except SlurmUnavailable as exc:
        pytest.skip(f"no local SLURM cluster: {exc}")
    yield c
    c.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-data")
    synth(root / "raw", per_class=30, seed=8)
    build(sorted((root / "raw").iterdir()), root / "split")
    return root


def submit(cluster, *args):
    """`hpml submit ...` -> {stage: job id}, in submission order."""
    proc = hpml("submit", *args, env={"SLURM_CONF": str(cluster.conf)})
    return dict(re.findall(r"^submitted (\w+): job (\d+)", proc.stdout, re.M))


def log_of(run_dir, job_id):
    return "".join(p.read_text() for p in (run_dir / "slurm").glob(f"*-{job_id}.out"))


def test_pipeline_chained_by_dependencies(cluster, data, tmp_path):
    run = tmp_path / "run"
    ids = submit(cluster, "pipeline", "--cluster", "local", "--config", DEMO, "--run-dir", run,
                 "--set", f"data.split_dir={data / 'split'}", "--set", f"data.shards={tmp_path / 'shards'}",
                 "--set", "train.epochs=2", "--set", "train.steps_per_epoch=10")  # fmt: skip
    assert list(ids) == ["preprocess", "train", "evaluate"]
    assert f"afterok:{ids['preprocess']}" in cluster.job(ids["train"]).get("Dependency", "")
    for stage in ids:
        info = cluster.wait(ids[stage])
        assert info["JobState"] == "COMPLETED", f"{stage}: {info}\n{log_of(run, ids[stage])}"
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["ranks"] == 2  # preprocess ran as 2 MPI ranks under srun
    assert "2 ranks x batch" in log_of(run, ids["train"])
    metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["count"] == manifest["totals"]["val"]["count"]
    for name in ("preprocess.sbatch", "train.sbatch", "evaluate.sbatch", "config.yaml"):
        assert (run / "slurm" / name).is_file()
    assert (run / "history.csv").is_file() and (run / "checkpoints" / "best.h5").is_file()


def test_preemption_checkpoints_requeues_and_resumes(cluster, data, tmp_path):
    run, shards = tmp_path / "run", tmp_path / "shards"
    hpml("preprocess", "--config", DEMO, "--split-dir", data / "split", "--out", shards, np=2)
    sets = ["--set", f"data.shards={shards}", "--set", "train.epochs=2", "--set", "train.steps_per_epoch=300"]
    ids = submit(cluster, "train", "--cluster", "local", "--config", DEMO, "--run-dir", run, *sets)
    job = ids["train"]
    deadline = time.monotonic() + 300
    while "epoch 1/2" not in log_of(run, job):  # training is under way
        assert time.monotonic() < deadline and cluster.job(job)["JobState"] in ("PENDING", "RUNNING")
        time.sleep(1)
    time.sleep(3)
    cluster.run("scancel", "--signal=USR1", "--batch", job)  # what --signal=B:USR1@lead delivers
    deadline = time.monotonic() + 300
    while cluster.job(job).get("Restarts", "0") == "0":
        assert time.monotonic() < deadline, log_of(run, job)
        assert cluster.job(job)["JobState"] in ("RUNNING", "COMPLETING", "PENDING", "REQUEUED"), log_of(run, job)
        time.sleep(1)
    info = cluster.wait(job, timeout=600)
    log = log_of(run, job)
    assert info["JobState"] == "COMPLETED", f"{info}\n{log}"
    assert "preemption signal: asking every rank to checkpoint" in log
    assert "requeueing job" in log and "(restart 1)" in log
    meta = json.loads(sorted((run / "checkpoints").glob("ckpt-*.json"))[0].read_text())
    assert "resumed from ckpt-" in log and meta
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs, none repeated


def test_bad_config_fails_fast_with_a_clear_message(cluster, data, tmp_path):
    run = tmp_path / "run"
    hpml("submit", "train", "--cluster", "local", "--config", DEMO, "--run-dir", run, "--dry-run")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    out = cluster.run("sbatch", "--parsable", str(run / "slurm" / "train.sbatch"), str(bad), str(run)).stdout
    job = out.strip().split(";")[0]
    start = time.monotonic()
    info = cluster.wait(job, timeout=300)
    assert info["JobState"] == "FAILED" and time.monotonic() - start < 120
    log = log_of(run, job)
    assert "unknown key 'train.epochz'" in log and str(bad) in log


def test_two_node_training_runs_one_rank_per_node(cluster, data, tmp_path):
    profile = yaml.safe_load((REPO / "configs/clusters/local.yaml").read_text())
    profile.update(nodes=2, tasks_per_node=1)
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(profile))
    run, shards = tmp_path / "run", tmp_path / "shards"
    hpml("preprocess", "--config", DEMO, "--split-dir", data / "split", "--out", shards, np=2)
    sets = ["--set", f"data.shards={shards}", "--set", "train.epochs=1", "--set", "train.steps_per_epoch=5"]
    ids = submit(cluster, "train", "--cluster", tmp_path / "two.yaml", "--config", DEMO, "--run-dir", run, *sets)
    info = cluster.wait(ids["train"])
    log = log_of(run, ids["train"])
    assert info["JobState"] == "COMPLETED", log
    assert info["NumNodes"] == "2" and info["NodeList"] == "n[1-2]" and info["NumTasks"] == "2"
    assert "2 ranks x batch" in log
    digests = {line.split()[-1] for line in log.splitlines() if "weights sha256" in line}
    assert len(digests) == 1


def test_job_scripts_are_valid_bash_with_real_directives():
    for script in (REPO / "jobs").glob("*.sbatch"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
        text = script.read_text()
        assert "#SBATCH --" in text and "##SBATCH" not in text  # the seed's were commented out
    train = (REPO / "jobs/train.sbatch").read_text()
    assert "--signal=B:USR1@" in train
    assert f"REQUEUE_EXIT={REQUEUE_EXIT_CODE} " in train and f'"${{RUN_DIR}}/{MARKER}"' in train  # one contract
