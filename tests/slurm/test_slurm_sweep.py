"""A sweep as a job array on the real local SLURM cluster, watched with `hpml status`.

One test on purpose: the array's life gives a pending, a running, a requeued and a finished
job to look at, and the cluster's minutes are precious (2 shared cores).
"""

import csv
import json
import re

import pytest
import yaml
from conftest import REPO, hpml, sets
from slurmcluster import poll

DEMO = REPO / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def shards(small_data):
    return small_data / "shards"


def task_log(sweep, array, i):
    path = sweep / "slurm" / f"hpml-sweep-{array}_{i}.out"
    return path.read_text() if path.is_file() else ""


def test_sweep_as_a_job_array_watched_preempted_resumed_and_reported(cluster, shards, tmp_path):
    env = {"SLURM_CONF": str(cluster.conf)}
    prof = yaml.safe_load((REPO / "configs/clusters/local.yaml").read_text())
    prof.update(nodes=1, tasks_per_node=1)  # one 2-core rank per point: two points at a time on two nodes
    (tmp_path / "one-node.yaml").write_text(yaml.safe_dump(prof))
    sweep = tmp_path / "sweep"
    overrides = sets(f"data.shards={shards}", "train.epochs=3", "train.steps_per_epoch=6")
    proc = hpml(
        "submit",
        "sweep",
        "--cluster",
        tmp_path / "one-node.yaml",
        "--config",
        DEMO,
        "--run-dir",
        sweep,
        "--grid",
        "train.lr=1e-3,4e-3",
        "--grid",
        "model.dropout=0,0.2",
        "--parallel",
        "2",
        *overrides,
        env=env,
    )
    array = re.search(r"^submitted sweep: job (\d+)", proc.stdout, re.M).group(1)
    assert "--array=0-3%2" in (sweep / "slurm" / "sweep.sbatch").read_text()
    points = json.loads((sweep / "sweep.json").read_text())["points"]
    expected = [[f"train.lr={lr}", f"model.dropout={d}"] for lr in ("0.001", "0.004") for d in ("0", "0.2")]
    assert [p["overrides"] for p in points] == expected
    for i in range(4):
        cfg = yaml.safe_load((sweep / f"p{i:03d}" / "slurm" / "config.yaml").read_text())
        assert (cfg["train"]["lr"], cfg["model"]["dropout"], cfg["train"]["epochs"]) == (
            [1e-3, 1e-3, 4e-3, 4e-3][i],
            [0.0, 0.2, 0.0, 0.2][i],
            3,
        )

    def status():
        return json.loads(hpml("status", sweep, "--json", env=env).stdout)

    # Pending: two tasks at a time (%2), so point 3 waits.
    st = status()
    assert [p["job"]["id"] for p in st["points"]] == [f"{array}_{i}" for i in range(4)]
    waiting = st["points"][3]
    assert waiting["job"]["state"] == "PENDING" and waiting["job"]["source"] == "scontrol", waiting
    # None: the scheduler has not looked at the task yet
    assert waiting["job"]["reason"] in ("JobArrayTaskLimit", "Priority", "Resources", None), waiting
    assert waiting["progress"]["epochs_done"] == 0 and waiting["progress"]["epoch"] is None

    # Running: point 1 has started training (rank 0 wrote its status file).
    poll(lambda: (sweep / "p001" / "status.json").is_file(), "point 1 to train", 400)
    p1 = status()["points"][1]
    assert p1["job"]["state"] == "RUNNING" and p1["job"]["nodes"] in ("n1", "n2") and p1["job"]["restarts"] == 0
    assert p1["progress"]["epochs"] == 3 and p1["progress"]["steps_per_epoch"] == 6
    assert p1["progress"]["job"] == f"job={array}_1 restart=0"

    # Requeued: SLURM's warning to task 1 alone; it checkpoints, requeues itself, resumes.
    cluster.run("scancel", "--signal=USR1", "--batch", f"{array}_1")
    poll(lambda: cluster.job(f"{array}_1").get("Restarts") == "1", "task 1's requeue", 400)
    p1 = status()["points"][1]
    assert p1["job"]["restarts"] == 1 and p1["job"]["state"] in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING")

    # Finished: every task.
    for i in range(4):
        info = cluster.wait(f"{array}_{i}", timeout=900)
        assert info["JobState"] == "COMPLETED", f"{info}\n{task_log(sweep, array, i)}"
    st = status()
    assert [p["job"]["state"] for p in st["points"]] == ["COMPLETED"] * 4
    assert [p["job"]["exit_code"] for p in st["points"]] == ["0:0"] * 4
    assert [p["job"]["restarts"] for p in st["points"]] == [0, 1, 0, 0]
    assert [p["progress"]["epochs_done"] for p in st["points"]] == [3] * 4
    assert all(p["progress"]["phase"] == "done" and p["progress"]["last"]["val_accuracy"] >= 0 for p in st["points"])
    text = hpml("status", sweep, env=env).stdout
    assert f"job {array}_1" in text and "COMPLETED" in text and "restarts 1" in text and "epoch 3/3" in text

    log1 = task_log(sweep, array, 1)
    assert f"requeueing job {array}_1 (restart 1)" in log1 and "resumed from ckpt-" in log1
    for i in (0, 2, 3):  # the other tasks never heard of it
        assert "preemption signal" not in task_log(sweep, array, i) and "(restart 1)" not in task_log(sweep, array, i)

    # The report: one row per point, its numbers straight from that point's history.csv.
    hpml("sweep", "report", sweep, "--metric", "val_accuracy", env=env)
    with (sweep / "report.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["point"]) for r in rows) == [0, 1, 2, 3]
    for row in rows:
        with (sweep / f"p{int(row['point']):03d}" / "history.csv").open() as fh:
            history = list(csv.DictReader(fh))
        accs = [float(h["val_accuracy"]) for h in history]
        assert len(history) == 3 and row["epochs"] == "3/3" and row["state"].startswith("COMPLETED")
        assert float(row["best_val_accuracy"]) == pytest.approx(max(accs))
        assert int(row["best_epoch"]) == int(history[accs.index(max(accs))]["epoch"])
        assert float(row["min_val_loss"]) == pytest.approx(min(float(h["val_loss"]) for h in history))
        assert float(row["cpu_hours"]) > 0
    best = [float(r["best_val_accuracy"]) for r in rows]
    assert best == sorted(best, reverse=True)
    assert (sweep / "report.md").read_text().count("\n| ") == 5 and (sweep / "curves.png").stat().st_size > 0

    # Efficiency after the fact: the ranks' own records (two runs of point 1); no accounting here.
    out = hpml("efficiency", sweep / "p001", env=env).stdout
    doc = json.loads((sweep / "p001" / "efficiency.json").read_text())
    ranks = doc["measured_by_ranks"]
    assert ranks["runs"] == 2 and 0 < ranks["cpu_efficiency"] <= 1.5 and ranks["max_rss_mb"] > 50
    assert any("accounting storage is disabled" in e for e in doc["sacct_unavailable"]), doc
    assert "CPU efficiency" in out and "sacct" in out
