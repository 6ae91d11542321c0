"""`train.tracker: mlflow` through a real `hpml train` and its resume: one MLflow run, every epoch."""

from __future__ import annotations

import pytest
from shardmaker import write_shards
from trainutil import SMALL, run, train_cmd


@pytest.mark.slow  # two short trainings: about half a minute
def test_a_resumed_training_continues_its_mlflow_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.14+ reads a file store only with it

    shards = tmp_path / "shards"
    write_shards(shards, {"train-00000-00000.tfrecord": [0, 1, 2] * 4, "val-00000-00000.tfrecord": [0, 1, 2]})
    cmd = train_cmd(shards, tmp_path / "run", *SMALL, "train.tracker=mlflow", np=0)
    code, log = run([*cmd, "--set", "train.epochs=1"], env={"MLFLOW_ALLOW_FILE_STORE": "true"})
    assert code == 0, log
    code, log = run([*cmd, "--set", "train.epochs=2"], env={"MLFLOW_ALLOW_FILE_STORE": "true"})
    assert code == 0 and "resumed from ckpt-" in log, log
    client = MlflowClient(tracking_uri=(tmp_path / "run" / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "hpml"]
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == (tmp_path / "run" / "mlflow_run_id").read_text().strip()
    assert found.info.status == "FINISHED" and found.data.params["train.tracker"] == "mlflow"
    steps = [m.step for m in client.get_metric_history(found.info.run_id, "val_loss")]
    assert steps == [1, 2]
    assert {a.path for a in client.list_artifacts(found.info.run_id)} >= {"config.yaml", "history.csv"}
