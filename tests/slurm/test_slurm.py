"""SLURM jobs against a real SLURM cluster started on this machine (tests/slurmcluster.py).

Two nodes of 2 CPUs with task/affinity binding and a node-local $TMPDIR each; the profile
`local` runs one training rank per node with its 2 cores. Signals and time limits are checked
by SLURM on a timer and arrive up to ~30 s late: every wait is a poll with a generous deadline.
"""

import json
import os
import re
import time

import pytest
import yaml
from conftest import REPO, hpml, sets
from slurmcluster import poll

from hpml.core.runfiles import RunDir

DEMO = REPO / "configs" / "demo.yaml"
LONG = ["--set", "train.epochs=1000", "--set", "train.steps_per_epoch=5"]  # stopped by the tests, not by itself


@pytest.fixture(scope="module")
def data(small_data):
    return small_data


def submit(cluster, *args, env=None):
    """`hpml submit ...` -> {stage: job id}, in submission order."""
    proc = hpml("submit", *args, env={"SLURM_CONF": str(cluster.conf), **(env or {})})
    return dict(re.findall(r"^submitted (\w+): job (\d+)", proc.stdout, re.M))


def profile(tmp_path, **changes):
    p = yaml.safe_load((REPO / "configs/clusters/local.yaml").read_text())
    p.update(changes)
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def log_of(run_dir, job_id):
    return "".join(p.read_text() for p in (run_dir / "slurm").glob(f"*-{job_id}.out"))


def training_under_way(cluster, run, job):
    """Rank 0 has built the model: the preemption handlers are long installed."""
    poll(
        lambda: "INFO hpml.train.loop: model " in log_of(run, job)
        or cluster.job(job)["JobState"] not in ("PENDING", "RUNNING"),
        f"job {job} to start training",
    )
    assert cluster.job(job)["JobState"] == "RUNNING", log_of(run, job)


def test_pipeline_places_ranks_on_their_cores_and_stages_once_per_node(cluster, data, tmp_path):
    run, shards = tmp_path / "run", tmp_path / "shards"
    overrides = sets(
        f"data.split_dir={data / 'split'}", f"data.shards={shards}", "train.epochs=1", "train.steps_per_epoch=5"
    )
    ids = submit(cluster, "pipeline", "--cluster", "local", "--config", DEMO, "--run-dir", run, *overrides)
    assert list(ids) == ["preprocess", "train", "evaluate"]
    assert f"afterok:{ids['preprocess']}" in cluster.job(ids["train"]).get("Dependency", "")
    for stage in ids:
        info = cluster.wait(ids[stage])
        assert info["JobState"] == "COMPLETED", f"{stage}: {info}\n{log_of(run, ids[stage])}"
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["ranks"] == 2  # preprocess ran as 2 MPI ranks under srun
    log = log_of(run, ids["train"])
    info = cluster.job(ids["train"])
    assert info["NumNodes"] == "2" and info["NodeList"] == "n[1-2]" and info["NumTasks"] == "2"
    assert "2 ranks x batch" in log
    # srun must pass --cpus-per-task itself (SLURM 22.05 does not inherit it); each rank then
    # really runs on the 2 cores of its node, not on one.
    launch = re.search(r"^hpml: launch: (srun .*)$", log, re.M).group(1)
    assert "--cpus-per-task=2" in launch and "--cpu-bind=cores" in launch, launch
    placement = re.findall(
        r"\[(\d)/2\] INFO hpml.parallel.placement: placement: \S+ cpus=(\d+) \[([\d,-]+)\] cpus_per_task=2 "
        r"OMP_NUM_THREADS=2",
        log,
    )
    assert sorted(placement) == [("0", "2", "0-1"), ("1", "2", "0-1")], log
    # Staging: once per node, into that node's own $TMPDIR (the TaskProlog's per-node folder).
    staged = re.findall(r"INFO hpml.train.staging: staged shards to (\S+)", log)
    nodes = sorted(re.search(r"/spool/(n\d)/tmp/job\d+/hpml-\d+-[^/]+$", s).group(1) for s in staged)
    assert nodes == ["n1", "n2"], staged
    metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["count"] == manifest["totals"]["val"]["count"]
    for name in ("preprocess.sbatch", "train.sbatch", "evaluate.sbatch", "config.yaml", "submitted.json"):
        assert (run / "slurm" / name).is_file()
    assert (run / "history.csv").is_file() and (run / "checkpoints" / "best.h5").is_file()
    digests = {line.split()[-1] for line in log.splitlines() if "weights sha256" in line}
    assert len(digests) == 1  # both nodes' ranks end with the same weights
    # hpml status: SLURM's view (scontrol: this cluster keeps no accounting) and the run's own
    doc = json.loads(hpml("status", run, "--json", env={"SLURM_CONF": str(cluster.conf)}).stdout)
    assert [(j["stage"], j["id"], j["state"], j["exit_code"], j["restarts"], j["source"]) for j in doc["jobs"]] == [
        (stage, ids[stage], "COMPLETED", "0:0", 0, "scontrol") for stage in ids
    ]
    assert doc["jobs"][1]["nodes"] == "n[1-2]" and doc["progress"]["phase"] == "done"
    assert doc["progress"]["epochs_done"] == 1 and doc["progress"]["job"] == f"job={ids['train']} restart=0"


def test_time_limit_signal_from_slurm_checkpoints_requeues_and_resumes(cluster, data, tmp_path):
    """Nobody signals this job but SLURM: a 3-minute limit, USR1 60 s before it (SLURM may send
    it up to 60 s earlier still: 60-120 s after the start)."""
    run = tmp_path / "run"
    prof = profile(tmp_path, time={"preprocess": "00:10:00", "train": "00:03:00", "evaluate": "00:10:00"})
    ids = submit(
        cluster,
        "train",
        "--cluster",
        prof,
        "--config",
        DEMO,
        "--run-dir",
        run,
        "--set",
        f"data.shards={data / 'shards'}",
        *LONG,
    )
    job = ids["train"]
    info = poll(lambda: (i := cluster.job(job)).get("Restarts", "0") != "0" and i, "SLURM's own USR1 + requeue", 400)
    # While it waits to run again, shorten the run to two more epochs (epochs is only the
    # stopping point; the resumed run's data position and optimizer state are untouched).
    newest = max((run / "checkpoints").glob("ckpt-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    preempted = json.loads(newest.read_text())["state"]
    config = run / "slurm" / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["train"]["epochs"] = preempted["epoch"] + 2
    config.write_text(yaml.safe_dump(cfg))
    assert info["JobState"] in ("PENDING", "REQUEUED", "RUNNING", "COMPLETING"), info
    info = cluster.wait(job, timeout=600)
    log = log_of(run, job)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{log}"
    assert "preemption signal: asking every rank to checkpoint" in log and "received SIGUSR1" in log
    assert f"requeueing job {job} (restart 1)" in log and "(restart 1) on n[1-2]" in log
    assert f"resumed from {newest.stem}: epoch {preempted['epoch']}, step {preempted['step_in_epoch']}" in log
    assert "TIMEOUT" not in log and "TERM" not in log  # checkpointed and requeued before the limit
    epochs = [int(r.split(",")[0]) for r in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(preempted["epoch"] + 2))  # every epoch once, none repeated or lost
    assert not RunDir(run).marker.exists()


def test_scancel_ends_a_training_job_without_requeue(cluster, data, tmp_path):
    run = tmp_path / "run"
    ids = submit(
        cluster,
        "train",
        "--cluster",
        "local",
        "--config",
        DEMO,
        "--run-dir",
        run,
        "--set",
        f"data.shards={data / 'shards'}",
        *LONG,
    )
    job = ids["train"]
    # Past the first epoch: steps are quick now, so the ranks checkpoint well within KillWait
    # (an old script then requeued the cancelled job on the ranks' exit 75).
    try:
        poll(lambda: "INFO hpml.train.epoch_end: epoch 1/" in log_of(run, job), "the first epoch", 400)
    finally:
        cluster.run("scancel", job)  # also when the poll fails: a 1000-epoch job would hold the cluster
    poll(lambda: cluster.job(job)["JobState"] == "CANCELLED", "the job to end")
    poll(lambda: "it will not be requeued" in log_of(run, job), "the script's TERM trap")
    time.sleep(35)  # KillWait: the script could still act until SLURM kills it
    info = cluster.job(job)
    log = log_of(run, job)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", f"{info}\n{log}"
    assert "requeueing" not in log and log.count("hpml: job ") == 1


def test_stale_marker_and_a_start_that_fails_end_failed_not_requeued(cluster, data, tmp_path):
    """A marker left by an earlier job, and a rerun that dies before rank 0 could clear it."""
    run = tmp_path / "run"
    hpml(
        "submit",
        "train",
        "--cluster",
        "local",
        "--config",
        DEMO,
        "--run-dir",
        run,
        "--set",
        f"data.shards={data / 'shards'}",
        "--dry-run",
    )
    RunDir(run).marker.write_text("job=999 restart=0\nsignal=SIGUSR1 epoch=0 step=3\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    job = cluster.run("sbatch", "--parsable", str(run / "slurm" / "train.sbatch"), str(bad), str(run)).stdout.strip()
    start = time.monotonic()
    info = cluster.wait(job, timeout=300)
    time.sleep(15)  # a requeue would show by now (cred_expire is 10 s)
    info, log = cluster.job(job), log_of(run, job)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0" and info["ExitCode"] != "0:0", f"{info}\n{log}"
    assert time.monotonic() - start < 150
    assert "unknown key 'train.epochz'" in log and str(bad) in log  # the key and the file, in the job log
    assert f"ignoring a stale {RunDir(run).marker} ('job=999 restart=0'): this run (job={job} restart=0)" in log
    assert "requeueing" not in log and log.count("hpml: job ") == 1


def test_restart_cap_ends_the_job_with_a_message_and_container_binds(cluster, data, tmp_path):
    """max_restarts: 1. The container is a stand-in `apptainer` (none exists here) that records
    the binds it was given and runs hpml from this checkout's environment."""
    run, stub = tmp_path / "run", tmp_path / "bin"
    stub.mkdir()
    binds_log = tmp_path / "binds.txt"
    (stub / "apptainer").write_text(f"""#!/bin/bash
# apptainer exec [--nv] [--bind LIST] IMAGE CMD...
shift
while [[ $1 == --* ]]; do
  if [[ $1 == --bind ]]; then echo "$SLURMD_NODENAME $2" >> {binds_log}; shift; fi
  shift
done
shift  # the image
exec {REPO / ".venv" / "bin"}/"$@"
""")
    (stub / "apptainer").chmod(0o755)
    prof = profile(tmp_path, max_restarts=1, container="/images/hpml.sif")
    env = {"PATH": f"{stub}:{os.environ['PATH']}"}
    ids = submit(
        cluster,
        "train",
        "--cluster",
        prof,
        "--config",
        DEMO,
        "--run-dir",
        run,
        "--set",
        f"data.shards={data / 'shards'}",
        *LONG,
        env=env,
    )
    job = ids["train"]
    training_under_way(cluster, run, job)
    cluster.run("scancel", "--signal=USR1", "--batch", job)  # what --signal=B:USR1@lead delivers
    poll(lambda: cluster.job(job).get("Restarts", "0") == "1", "the requeue", 300)
    poll(lambda: log_of(run, job).count("INFO hpml.train.loop: model ") == 2, "the rerun to train", 300)
    cluster.run("scancel", "--signal=USR1", "--batch", job)
    info = cluster.wait(job, timeout=300)
    log = log_of(run, job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "75:0" and info["Restarts"] == "1", f"{info}\n{log}"
    assert "restart cap reached: 1 restart(s), max_restarts 1 (cluster profile)" in log
    assert log.count("preempted at epoch") == 2  # both runs checkpointed
    # Binds: the run dir, the shards, this repository, and each node's own $TMPDIR.
    lines = binds_log.read_text().splitlines()
    by_node = {line.split()[0]: line.split()[1].split(",") for line in lines}
    assert sorted(by_node) == ["n1", "n2"], lines
    for node, binds in by_node.items():
        assert str(run.resolve()) in binds and str((data / "shards").resolve()) in binds and str(REPO) in binds
        assert any(re.search(rf"/spool/{node}/tmp/job{job}$", b) for b in binds), (node, binds)


def test_failed_train_stage_removes_the_waiting_evaluate_job(cluster, data, tmp_path):
    run = tmp_path / "run"
    corrupt = tmp_path / "weights.h5"
    corrupt.write_bytes(b"not an HDF5 file")
    overrides = sets(
        f"data.split_dir={data / 'split'}",
        f"data.shards={data / 'shards'}",
        f"model.weights={corrupt}",
        "train.epochs=1",
    )
    ids = submit(cluster, "pipeline", "--cluster", "local", "--config", DEMO, "--run-dir", run, *overrides)
    assert cluster.wait(ids["train"], timeout=400)["JobState"] == "FAILED", log_of(run, ids["train"])
    info = poll(lambda: (i := cluster.job(ids["evaluate"]))["JobState"] != "PENDING" and i, "evaluate's removal", 120)
    assert info["JobState"] == "CANCELLED" and info["Reason"] == "DependencyNeverSatisfied", info


def test_refused_sbatch_cancels_the_stages_already_queued(cluster, data, tmp_path):
    run = tmp_path / "run"
    prof = profile(tmp_path, partition="nosuch")  # preprocess (cpu_partition) is accepted, train is not
    overrides = sets(f"data.split_dir={data / 'split'}", f"data.shards={tmp_path / 'shards'}")
    proc = hpml(
        "submit",
        "pipeline",
        "--cluster",
        prof,
        "--config",
        DEMO,
        "--run-dir",
        run,
        *overrides,
        env={"SLURM_CONF": str(cluster.conf)},
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    queued = re.search(r"^submitted preprocess: job (\d+)", proc.stdout, re.M).group(1)
    assert "sbatch refused the train job" in proc.stderr
    assert f"cancelled the stages already queued: preprocess {queued}" in proc.stderr
    assert cluster.wait(queued, timeout=120)["JobState"] == "CANCELLED"
