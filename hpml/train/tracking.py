"""`train.tracker: mlflow`: rank 0 logs the run to an MLflow file store, one MLflow run per RUN.

- **Where.** `$MLFLOW_TRACKING_URI` when set (a `file:` URI or a path: compute nodes usually reach
  no tracking server, so a file store is the point and other schemes are refused), else RUN/mlruns;
  the experiment is `$MLFLOW_EXPERIMENT_NAME`, else `hpml`. MLflow keeps its file store in
  maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE=true, which this module sets
  (where it is unset) before opening its store. Look at it with
  `MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri RUN/mlruns`.
- **What.** At start: the resolved config flattened into params (`train.lr`, `model.backbone`,
  `train.class_weights.COVID-19`; a value longer than MLflow's limit is cut and says so: the
  config.yaml artifact holds it whole), and tags: this attempt's SLURM job and restart
  (hpml.core.jobid), hpml's version, the run directory. Each epoch: history.csv's numeric
  columns (`METRICS`: hpml.core.history.FIELDS less `epoch` and `val_confusion`; an empty cell,
  not measured, is left out) at step = the epoch as the log line counts it, from 1. At finish:
  config.yaml, history.csv and checkpoints/best.json as artifacts (not best.h5: too large).
- **One MLflow run across requeues.** The run id is kept in RUN/mlflow_run_id; a resumed or
  requeued attempt reopens that run (status RUNNING again) and its metrics continue. `restart`
  (`hpml train --restart`) starts a new MLflow run; so does a stored id the store does not hold.
- **An epoch redone after a resume** (the attempt died between its history row and its
  checkpoint) is logged again at the same step: MLflow keeps both points and reports the later
  one as the latest value, which is the row history.csv keeps (it replaces the redone epoch's
  rows). Skipping steps already logged would instead keep the numbers history.csv dropped.
- **Params on a resume.** MLflow refuses to change a logged param: keys not logged yet are logged,
  a changed value (e.g. `train.batch_size` on another rank count) is a warning and the tag
  `hpml.changed.<key>` ("old -> new").
- **Imported only when asked.** `train.tracker: none` imports nothing and writes nothing; mlflow is
  imported in `start()` alone. It is setup.py's `tracking` extra (`pip install 'hpml[tracking]'`);
  asked for and missing, `start()` raises a UsageError naming it.
- **Never fatal.** A failure of the store (disk full, permissions, a vanished folder), at start or
  later, is one warning and tracking stops for this attempt; the training goes on. What the user
  must fix (mlflow not installed, a tracking server's URI) is a UsageError at start.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hpml import __version__
from hpml.core.config import Config
from hpml.core.errors import UsageError
from hpml.core.files import write_text_atomic
from hpml.core.history import FIELDS, TEXT
from hpml.core.jobid import job_identity
from hpml.core.runfiles import RunDir

log = logging.getLogger(__name__)

STORE = "mlruns"  # RUN/mlruns: the file store when $MLFLOW_TRACKING_URI is unset
EXPERIMENT = "hpml"  # the MLflow experiment when $MLFLOW_EXPERIMENT_NAME is unset
METRICS = tuple(k for k in FIELDS if k != "epoch" and k not in TEXT)  # history.csv's numeric columns
ARTIFACTS = ("config", "history", "best_info")  # RunDir's names of the files logged at finish
BATCH = 100  # params or tags in one log_batch: MLflow's limit
STATUSES = ("FINISHED", "FAILED", "KILLED")


def store_uri(run_dir: Path, environ: dict[str, str] | None = None) -> str:
    """The file store's URI: `$MLFLOW_TRACKING_URI` (a `file:` URI or a path) or RUN/mlruns."""
    env = os.environ if environ is None else environ
    given = (env.get("MLFLOW_TRACKING_URI") or "").strip()
    if not given:
        return (Path(run_dir) / STORE).resolve().as_uri()
    scheme = urlparse(given).scheme
    if scheme == "file":
        return given
    if scheme:
        raise UsageError(
            f"train.tracker: mlflow logs to a file store: MLFLOW_TRACKING_URI={given!r} must be a file: URI "
            "or a path (compute nodes usually reach no tracking server); unset it for RUN/mlruns"
        )
    return Path(given).resolve().as_uri()


def flat_params(cfg: Config) -> dict[str, str]:
    """The resolved config as MLflow params: `section.key[.subkey]` -> the value as YAML/JSON writes it."""
    out: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            out[key] = value if isinstance(value, str) else json.dumps(value)

    walk(cfg.to_dict(), "")
    return out


def cut(value: str, limit: int) -> str:
    """`value`, or as much of it as fits `limit` characters with a note saying it was cut."""
    if len(value) <= limit:
        return value
    note = f"... [cut: {len(value)} characters, see config.yaml]"
    return value[: limit - len(note)] + note if limit > len(note) else value[:limit]


def new_params(cfg: Config, logged: dict[str, str], limit: int) -> tuple[dict[str, str], dict[str, str]]:
    """(the params not logged yet, {key: "old -> new"} for those logged with another value)."""
    params, changed = {}, {}
    for key, value in flat_params(cfg).items():
        value = cut(value, limit)
        if key not in logged:
            params[key] = value
        elif logged[key] != value:
            changed[key] = cut(f"{logged[key]} -> {value}", limit)
    return params, changed


def attempt_tags(run: RunDir) -> dict[str, str]:
    """This attempt's tags: the SLURM job and restart (`job=<id> restart=<n>`), hpml's version, the RUN."""
    words = dict(word.split("=", 1) for word in job_identity().split())
    return {
        "slurm.job": words["job"],
        "slurm.restart": words["restart"],
        "hpml.version": __version__,
        "hpml.run_dir": str(run.path.resolve()),
    }


class Tracker:
    """Rank 0's experiment tracking: `start(run_dir, cfg)`, `log_epoch(row, epoch)`, `finish(status)`.

    With `train.tracker: none` (or before `start`, or after a store failure) every method does nothing.
    """

    def __init__(self) -> None:
        self.run_id: str | None = None  # the MLflow run, once started
        self.uri: str | None = None  # the store
        self._client = None
        self._entities = None  # mlflow.entities, imported by start()
        self._run: RunDir | None = None

    @property
    def active(self) -> bool:
        return self._client is not None

    def start(self, run_dir: Path, cfg: Config, restart: bool = False) -> None:
        """Open (or, on a resumed RUN, reopen) the MLflow run and log the params and tags. After save_config."""
        if cfg.train.tracker == "none":
            return
        run = RunDir(run_dir)
        uri = store_uri(run.path)
        try:
            import mlflow.entities
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
            from mlflow.utils import validation
        except ImportError as exc:
            raise UsageError(
                f"train.tracker: mlflow needs MLflow ({exc}): install hpml's tracking extra, "
                "pip install 'hpml[tracking]', or set train.tracker: none"
            ) from None
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.14+ refuses a file store without it
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # compute nodes: nothing leaves the job
        try:
            client = MlflowClient(tracking_uri=uri)
            found = None if restart else self._reopen(client, run, uri, MlflowException)
            run_id = self._create(client, run, MlflowException) if found is None else found.info.run_id
            limit = getattr(validation, "MAX_PARAM_VAL_LENGTH", 500)
            params, changed = new_params(cfg, found.data.params if found else {}, limit)
            if changed:
                log.warning("MLflow run %s keeps the first values of %s (tags hpml.changed.*)", run_id, sorted(changed))
            tags = attempt_tags(run) | {f"hpml.changed.{k}": v for k, v in changed.items()}
            params = [mlflow.entities.Param(k, v) for k, v in params.items()]
            tags = [mlflow.entities.RunTag(k, v) for k, v in tags.items()]
            for i in range(0, len(params), BATCH):
                client.log_batch(run_id, params=params[i : i + BATCH])
            for i in range(0, len(tags), BATCH):
                client.log_batch(run_id, tags=tags[i : i + BATCH])
        except Exception as exc:  # MLflow's file store raises bare Exceptions too; tracking is never fatal
            log.warning("train.tracker: mlflow: not tracking this attempt (store %s): %s", uri, exc)
            return
        self._client, self._entities, self._run, self.run_id, self.uri = client, mlflow.entities, run, run_id, uri
        log.info("MLflow run %s (%s) in %s", run_id, "new" if found is None else "continued", uri)

    def _reopen(self, client, run: RunDir, uri: str, not_found: type[BaseException]):
        """The MLflow run RUN/mlflow_run_id names, set RUNNING again; None when there is none to continue."""
        try:
            stored = run.mlflow_run_id.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            found = client.get_run(stored) if stored else None
        except not_found:
            found = None
        if found is None or found.info.lifecycle_stage != "active":
            log.warning("MLflow run %r (%s) is not in %s: starting a new MLflow run", stored, run.mlflow_run_id, uri)
            return None
        client.update_run(stored, status="RUNNING")
        return found

    def _create(self, client, run: RunDir, exists: type[BaseException]) -> str:
        """A new MLflow run for RUN, its id written to RUN/mlflow_run_id."""
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name)
            except exists:  # another run of a shared store created it meanwhile
                experiment_id = client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        run_id = client.create_run(experiment_id, run_name=run.path.resolve().name).info.run_id
        write_text_atomic(run.mlflow_run_id, run_id + "\n")
        return run_id

    def log_epoch(self, row: dict, epoch: int) -> None:
        """The epoch's history row (record_epoch's `row`) at step `epoch` (record_epoch's: from 1)."""
        if self._client is None:
            return
        stamp = int(time.time() * 1000)

        def log() -> None:
            metrics = [self._entities.Metric(k, float(row[k]), stamp, epoch) for k in METRICS if row.get(k, "") != ""]
            self._client.log_batch(self.run_id, metrics=metrics)

        self._guard(log)

    def finish(self, status: str = "FINISHED") -> None:
        """The artifacts (config.yaml, history.csv, checkpoints/best.json), then the run's status:
        FINISHED after the last epoch, KILLED on a preemption (a requeue reopens it), FAILED on an error."""
        if self._client is None:
            return
        if status not in STATUSES:
            raise ValueError(f"status {status!r}: one of {STATUSES}")

        def close() -> None:
            for name in ARTIFACTS:
                path = getattr(self._run, name)
                if path.is_file():
                    folder = path.parent.relative_to(self._run.path).as_posix()
                    self._client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
            self._client.set_terminated(self.run_id, status)

        self._guard(close)
        self._client = None

    def _guard(self, call) -> None:
        try:
            call()
        except Exception as exc:  # as in start(): a store failure ends the tracking, not the training
            log.warning("train.tracker: mlflow: logging to %s stopped for this attempt: %s", self.uri, exc)
            self._client = None
