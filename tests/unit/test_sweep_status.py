"""Sweeps, `hpml status` and job efficiency without a cluster (the SLURM side: test_slurm_sweep.py)."""

import csv
import json

import pytest
from conftest import REPO, hpml

from hpml.core.config import ConfigError
from hpml.slurm import sweep, sweep_report
from hpml.slurm.efficiency import cpu_seconds, megabytes
from hpml.slurm.query import _task_ids

DEMO = REPO / "configs" / "demo.yaml"
NO_SLURM = {"PATH": "/usr/bin:/bin"}  # hpml runs as sys.executable -m hpml.cli; these runs have no job ids to ask about


def fake_shards(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir(exist_ok=True)
    (shards / "manifest.json").write_text("{}")
    return shards


def test_grid_options_and_sweep_files(tmp_path):
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(
        "config: configs/demo.yaml\nset: [train.epochs=2]\ngrid:\n  train.lr: [1.0e-3, 2e-3]\n" "parallel: 3\n"
    )
    spec = sweep.load_spec(spec_file, ["model.head=flatten,gap"], None)
    assert spec.grid == {"train.lr": [1e-3, "2e-3"], "model.head": ["flatten", "gap"]} and spec.parallel == 3
    assert [sweep.as_overrides(p) for p in sweep.points(spec.grid)][1] == ["train.lr=0.001", "model.head=gap"]
    assert sweep.array_spec([0, 1, 2, 5, 7, 8], 2) == "0-2,5,7-8%2" and sweep.array_spec([0, 1], 4) == "0-1"
    spec_file.write_text("grid: {train.lr: [1]}\nsweeps: 2\n")
    with pytest.raises(ConfigError, match=f"{spec_file}: unknown key"):
        sweep.load_spec(spec_file, [], None)
    with pytest.raises(ConfigError, match="--grid train.lr: expected section.key=v1,v2"):
        sweep.load_spec(None, ["train.lr"], None)


def test_every_point_is_validated_before_anything_is_queued(tmp_path):
    proc = hpml(
        "submit",
        "sweep",
        "--cluster",
        "local",
        "--config",
        DEMO,
        "--run-dir",
        tmp_path / "sw",
        "--set",
        f"data.shards={fake_shards(tmp_path)}",
        "--grid",
        "train.lr=1e-3,fast",
        check=False,
        env=NO_SLURM,
    )
    assert proc.returncode == 2
    assert "sweep point 1 (lr=fast)" in proc.stderr and "train.lr: expected a number" in proc.stderr
    assert not (tmp_path / "sw").exists()


def test_dry_run_shows_points_and_script_and_a_resubmission_queues_only_unfinished_points(tmp_path):
    args = [
        "submit",
        "sweep",
        "--cluster",
        "snellius",
        "--config",
        DEMO,
        "--run-dir",
        tmp_path / "sw",
        "--set",
        f"data.shards={fake_shards(tmp_path)}",
        "--set",
        "train.epochs=2",
        "--grid",
        "train.lr=1e-3,2e-3",
        "--grid",
        "model.dropout=0,0.5",
        "--parallel=2",
        "--dry-run",
    ]
    out = hpml(*args, env=NO_SLURM).stdout
    assert "p003  lr=0.002 dropout=0.5" in out and out.count("to train") == 4
    assert "#SBATCH --array=0-3%2" in out and "#SBATCH --output=" in out and "%x-%A_%a.out" in out
    assert "# would run: sbatch --parsable" in out
    # points 0 and 2 have finished meanwhile
    for i in (0, 2):
        (tmp_path / "sw" / f"p{i:03d}" / "history.csv").write_text("epoch,loss\n0,1\n1,0.5\n")
    out = hpml(*args, env=NO_SLURM).stdout
    assert "#SBATCH --array=1,3" in out and out.count("finished") >= 2
    changed = [a if a != "model.dropout=0,0.5" else "model.dropout=0,0.3" for a in map(str, args)]
    proc = hpml(*changed, env=NO_SLURM, check=False)
    assert proc.returncode == 2 and "holds a different sweep (4 points)" in proc.stderr


def _write_history(run, rows):
    run.mkdir(parents=True, exist_ok=True)
    with (run / "history.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"])
        w.writeheader()
        for e, (vl, va) in enumerate(rows):
            w.writerow(
                {"epoch": e, "loss": 1, "accuracy": 0.5, "val_loss": vl, "val_accuracy": va, "lr": 1e-3, "seconds": 3.5}
            )


def test_report_sorts_by_the_metric_and_reads_each_history(tmp_path):
    sw = tmp_path / "sw"
    sw.mkdir()
    manifest = {
        "grid": {"train.lr": [1, 2, 3]},
        "points": [{"index": i, "overrides": [f"train.lr={i + 1}"], "label": f"lr={i + 1}"} for i in range(3)],
        "submissions": [],
        "epochs": {"0": 3, "1": 3, "2": 3},
        "cost": {"sbu_per_cpu_hour": 1.0},
    }
    (sw / "sweep.json").write_text(json.dumps(manifest))
    _write_history(sw / "p000", [(0.9, 0.5), (0.7, 0.8), (0.8, 0.7)])
    _write_history(sw / "p001", [(0.6, 0.9), (0.5, 0.6)])  # stopped early
    _, rows = sweep_report.rows(sw, "val_loss")
    assert [(r["point"], r["best_val_loss"], r["best_epoch"], r["state"]) for r in rows] == [
        (1, 0.5, 1, "partial"),
        (0, 0.7, 1, "done"),
        (2, None, None, "not started"),
    ]
    _, rows = sweep_report.rows(sw, "val_accuracy")
    assert [(r["point"], r["best_val_accuracy"], r["best_epoch"]) for r in rows][:2] == [(1, 0.9, 0), (0, 0.8, 1)]
    paths = sweep_report.write(sw, rows, "val_accuracy", sw)
    assert [p.name for p in paths] == ["report.md", "report.csv", "curves.png"]
    assert "| point | train.lr | state |" in (sw / "report.md").read_text()


def test_slurm_time_and_memory_formats():
    assert [cpu_seconds(t) for t in ("00:01.500", "12:34.000", "01:02:03", "1-02:03:04")] == [1.5, 754.0, 3723, 93784]
    assert [megabytes(t) for t in ("2048K", "512M", "1.5G", "4000Mn", "")] == [2.0, 512.0, 1536.0, 4000.0, None]
    assert _task_ids("2-3%2") == {2, 3} and _task_ids("0,4-5") == {0, 4, 5} and _task_ids("") == set()
