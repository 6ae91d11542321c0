"""train.tracker (hpml.train.tracking): an MLflow file store, one MLflow run per RUN across resumes.

Each test drives the tracker as rank 0 of hpml/train/loop.py does (config.yaml saved, start, one
log_epoch per epoch beside history.csv, finish) and reads the store back with MLflow's own client.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

import hpml
from hpml.core.config import Config, ConfigError, TrainConfig, load_config, save_config
from hpml.core.errors import UsageError
from hpml.core.history import FIELDS
from hpml.core.runfiles import RunDir
from hpml.train.tracking import METRICS, Tracker

MLFLOW_CFG = Config(train=TrainConfig(tracker="mlflow", lr=1e-4, epochs=3))


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    """No tracking URI or experiment from the caller; SLURM job 1234, first run; MLflow's file-store
    switch unset (and restored afterwards: the tracker sets it in this process)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")


def value(key: str, epoch: int, attempt: int = 0) -> float:
    """A distinct number per column, epoch and attempt."""
    return round(epoch + FIELDS.index(key) / 100 - attempt / 1000, 6)


def row(epoch: int, attempt: int = 0) -> dict:
    """record_epoch's row for the 1-based `epoch` (its `epoch` column is 0-based, as loop.py writes it)."""
    out = {k: value(k, epoch, attempt) for k in FIELDS}
    out.update(epoch=epoch - 1, val_confusion="3 0 0/0 2 1/0 0 4")
    return out


def attempt(run_dir: Path, cfg: Config, epochs: range, status: str = "FINISHED", *, restart=False, again=0) -> str:
    """One training attempt as rank 0 runs it; returns the MLflow run id."""
    run = RunDir(run_dir)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.config)
    tracker = Tracker()
    tracker.start(run_dir, cfg, restart=restart)
    for epoch in epochs:
        r = row(epoch, again)
        rows = [x for x in _history(run) if int(x["epoch"]) < r["epoch"]] + [r]
        with run.history.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        run.best_info.write_text(json.dumps({"epoch": epoch - 1, "monitor": "val_loss"}))
        (run.checkpoints / "best.h5").write_bytes(b"weights")
        tracker.log_epoch(r, epoch)
    tracker.finish(status)
    return tracker.run_id


def _history(run: RunDir) -> list[dict]:
    if not run.history.is_file():
        return []
    with run.history.open() as fh:
        return list(csv.DictReader(fh))


def leaves(tree: dict) -> int:
    return sum(leaves(v) if isinstance(v, dict) and v else 1 for v in tree.values())


def client_for(store: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=store.resolve().as_uri())


def steps(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)]


def runs_in(client: MlflowClient) -> list:
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.fixture()
def no_mlflow(monkeypatch):
    """`import mlflow` raises ImportError for the test's length (as where the extra is not installed)."""
    for name in [n for n in sys.modules if n == "mlflow" or n.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)


def test_the_key_defaults_to_none_and_takes_mlflow_only():
    assert Config().train.tracker == "none"
    assert load_config(overrides=["train.tracker=mlflow"]).train.tracker == "mlflow"
    with pytest.raises(ConfigError, match="train.tracker"):
        load_config(overrides=["train.tracker=wandb"])


def test_none_imports_nothing_and_writes_nothing(tmp_path, no_mlflow):
    tracker = Tracker()
    tracker.start(tmp_path, Config())  # would raise ImportError had it tried to import mlflow
    tracker.log_epoch(row(1), 1)
    tracker.finish()
    assert not tracker.active and tracker.run_id is None
    assert sys.modules["mlflow"] is None and list(tmp_path.iterdir()) == []


def test_mlflow_asked_for_and_missing_names_the_extra(tmp_path, no_mlflow):
    with pytest.raises(UsageError, match=r"hpml\[tracking\]"):
        Tracker().start(tmp_path, MLFLOW_CFG)


def test_a_run_logs_params_tags_metrics_by_epoch_and_artifacts(tmp_path):
    run_dir = tmp_path / "run"
    run_id = attempt(run_dir, MLFLOW_CFG, range(1, 3))
    assert RunDir(run_dir).mlflow_run_id.read_text().strip() == run_id
    client = client_for(run_dir / "mlruns")  # the default store: RUN/mlruns
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["train.lr"] == "0.0001" and params["model.backbone"] == MLFLOW_CFG.model.backbone
    assert params["train.tracker"] == "mlflow" and params["train.epochs"] == "3"
    assert params["train.class_weights.COVID-19"] == "1.0" and params["train.global_batch"] == "null"
    assert params["train.augment.flip"] == json.dumps(MLFLOW_CFG.train.augment.flip)
    assert len(params) == leaves(MLFLOW_CFG.to_dict())  # every value of the config, none left out
    tags = run.data.tags
    assert (tags["slurm.job"], tags["slurm.restart"], tags["hpml.version"]) == ("1234", "0", hpml.__version__)
    # history.csv's numeric columns, at step = the epoch as the log line counts it (1, 2)
    assert set(run.data.metrics) == set(METRICS)
    assert {"loss", "accuracy", "val_loss", "val_macro_f1", "val_sensitivity_COVID-19", "lr", "seconds"} <= set(METRICS)
    for key in METRICS:
        assert steps(client, run_id, key) == [(1, value(key, 1)), (2, value(key, 2))], key
    top = {a.path for a in client.list_artifacts(run_id)}
    assert top == {"config.yaml", "history.csv", "checkpoints"}
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == {"checkpoints/best.json"}  # no best.h5
    got = Path(client.download_artifacts(run_id, "history.csv", str(tmp_path)))
    assert got.read_text() == (run_dir / "history.csv").read_text()


def test_without_validation_the_empty_columns_are_left_out(tmp_path):
    tracker = Tracker()
    tracker.start(tmp_path, MLFLOW_CFG)
    tracker.log_epoch({**row(1), **{k: "" for k in FIELDS if k.startswith("val_")}}, 1)
    tracker.finish()
    metrics = client_for(tmp_path / "mlruns").get_run(tracker.run_id).data.metrics
    assert set(metrics) == {"loss", "accuracy", "lr", "seconds"}


def test_a_resumed_run_continues_the_same_mlflow_run(tmp_path, monkeypatch):
    first = attempt(tmp_path, MLFLOW_CFG, range(1, 3), "KILLED")  # preempted after epoch 2
    client = client_for(tmp_path / "mlruns")
    assert client.get_run(first).info.status == "KILLED"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the requeued job
    second = attempt(tmp_path, MLFLOW_CFG, range(3, 4))
    assert second == first
    assert [r.info.run_id for r in runs_in(client)] == [first]  # one MLflow run, not one per attempt
    run = client.get_run(first)
    assert run.info.status == "FINISHED" and run.data.tags["slurm.restart"] == "1"
    for key in METRICS:
        assert [s for s, _ in steps(client, first, key)] == [1, 2, 3], key
    assert run.data.metrics["loss"] == value("loss", 3)


def test_an_epoch_redone_after_a_resume_is_logged_again_and_its_new_value_is_the_latest(tmp_path):
    run_id = attempt(tmp_path, MLFLOW_CFG, range(1, 3), "KILLED")
    time.sleep(0.01)  # the redone points are later (in a real requeue: minutes)
    attempt(tmp_path, MLFLOW_CFG, range(2, 3), again=1)  # epoch 2's checkpoint was lost: redone (lower values)
    client = client_for(tmp_path / "mlruns")
    assert steps(client, run_id, "loss") == [(1, value("loss", 1)), (2, value("loss", 2)), (2, value("loss", 2, 1))]
    # MLflow's latest value is the later point of the step, the redone epoch's, as history.csv keeps it
    latest = client.get_run(run_id).data.metrics
    assert all(latest[k] == value(k, 2, 1) for k in METRICS)
    attempt(tmp_path, MLFLOW_CFG, range(3, 4))
    assert [s for s, _ in steps(client, run_id, "loss")] == [1, 2, 2, 3]


def test_restart_starts_a_new_mlflow_run(tmp_path):
    first = attempt(tmp_path, MLFLOW_CFG, range(1, 3))
    second = attempt(tmp_path, MLFLOW_CFG, range(1, 2), restart=True)
    assert second != first and RunDir(tmp_path).mlflow_run_id.read_text().strip() == second
    client = client_for(tmp_path / "mlruns")
    assert {r.info.run_id for r in runs_in(client)} == {first, second}
    assert [s for s, _ in steps(client, second, "loss")] == [1]


def test_a_stored_id_the_store_lacks_starts_a_new_run(tmp_path, caplog):
    RunDir(tmp_path).mlflow_run_id.write_text("0123456789abcdef0123456789abcdef\n")
    run_id = attempt(tmp_path, MLFLOW_CFG, range(1, 2))
    assert run_id != "0123456789abcdef0123456789abcdef" and "starting a new MLflow run" in caplog.text


@pytest.mark.parametrize("form", ["path", "file URI"])
def test_mlflow_tracking_uri_is_the_store(tmp_path, monkeypatch, form):
    store = tmp_path / "shared" / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(store) if form == "path" else store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweep-7")
    run_id = attempt(tmp_path / "run", MLFLOW_CFG, range(1, 2))
    assert not (tmp_path / "run" / "mlruns").exists()
    client = client_for(store)
    assert client.get_experiment(client.get_run(run_id).info.experiment_id).name == "sweep-7"
    assert steps(client, run_id, "loss") == [(1, value("loss", 1))]


def test_a_tracking_server_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")
    with pytest.raises(UsageError, match="file: URI or a path"):
        Tracker().start(tmp_path, MLFLOW_CFG)


def test_long_values_are_cut_and_changed_ones_kept_on_resume(tmp_path, caplog):
    long = "/scratch/" + "x" * (MAX_PARAM_VAL_LENGTH + 100)
    cfg = replace(MLFLOW_CFG, data=replace(MLFLOW_CFG.data, shards=long))
    run_id = attempt(tmp_path, cfg, range(1, 2), "KILLED")
    resumed = replace(cfg, train=replace(cfg.train, batch_size=4))  # resumed on twice the ranks
    assert attempt(tmp_path, resumed, range(2, 3)) == run_id
    run = client_for(tmp_path / "mlruns").get_run(run_id)
    shards = run.data.params["data.shards"]
    assert len(shards) == MAX_PARAM_VAL_LENGTH and shards.startswith("/scratch/xxx") and "cut" in shards
    assert run.data.params["train.batch_size"] == "8" and run.data.tags["hpml.changed.train.batch_size"] == "8 -> 4"
    assert "train.batch_size" in caplog.text and run.info.status == "FINISHED"


def test_a_failing_store_stops_tracking_not_training(tmp_path, caplog):
    tracker = Tracker()
    tracker.start(tmp_path, MLFLOW_CFG)
    (tmp_path / "mlruns").rename(tmp_path / "gone")  # the store vanished under the run
    tracker.log_epoch(row(1), 1)  # a warning, not an exception
    assert not tracker.active and "stopped for this attempt" in caplog.text
    tracker.log_epoch(row(2), 2)
    tracker.finish()
