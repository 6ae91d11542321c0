"""TensorBoard HParams: the run's hyper-parameters beside its validation metrics (rank 0, at start).

`tensorboard --logdir SWEEP` (or a folder of runs) lists each RUN/tensorboard as a run; the
HPARAMS tab shows one row per run that holds a *session* (`_hparams_/session_start_info`: the
run's hyper-parameter values) with the last value of each metric the *experiment*
(`_hparams_/experiment`) names, read from the same run's scalars (hpml.train.epoch_end).

- **Which hyper-parameters.** A sweep point (the run directory is `point_dir(SWEEP, i)` of the
  SWEEP/sweep.json beside it) records exactly the sweep's grid keys with this point's values,
  typed as the config types them (`train.lr=1e-4` is 0.0001). A plain run records `PLAIN`, a
  fixed set, plus `train.global_batch` (per-rank batch x ranks); a value that is null is left out.
- **The experiment.** TensorBoard uses the first `_hparams_/experiment` it finds in any run of the
  logdir, so every run writes one and every point of a sweep writes the same: the grid keys with
  the grid's values as discrete domains. Plain runs write theirs from the config schema (a
  Literal's choices, a number's allowed range), the same for every plain run. Metrics: `METRICS`.
- **Once per run.** The session goes to its own event file (`*.hparams`) in RUN/tensorboard,
  written before the training's scalar file is opened (TensorBoard follows the newest file of a
  run). At every start the run's event files are read first: the same session already there
  (a resumed run) writes nothing; a different one (the run restarted with another config) is
  replaced, so a run never holds two sessions. A session another tool wrote is left alone.
- **Never fatal.** Metadata for a viewer must not stop a training: a failure is a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import tensorflow as tf
import yaml
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import error as hp_error
from tensorboard.plugins.hparams import metadata as hp_metadata

from hpml.core.config import CLASSES, Config, ConfigError, load_config
from hpml.core.runfiles import SWEEP_FILE, RunDir
from hpml.slurm.sweep import point_dir

log = logging.getLogger(__name__)

# The validation scalars record_epoch writes every epoch (history.csv's column names).
METRICS = ("val_loss", "val_accuracy", "val_macro_f1", f"val_sensitivity_{CLASSES[-1]}", f"val_ppv_{CLASSES[-1]}")
# A plain run's hyper-parameters: what COVID-Net / HPML experiments vary.
PLAIN = (
    "train.lr",
    "train.batch_size",
    "train.optimizer",
    "train.epochs",
    "train.covid_percent",
    "train.class_weights.COVID-19",
    "train.monitor",
    "model.backbone",
    "model.head",
    "model.dropout",
    "data.image_size",
)
GLOBAL_BATCH = "train.global_batch"
SUFFIX = ".hparams"  # events.out.tfevents.<time>.<host>.<pid>.<n>.hparams: the file this module writes
_TAGS = (hp_metadata.SESSION_START_INFO_TAG, hp_metadata.EXPERIMENT_TAG)


def write_hparams(run_dir: Path, cfg: Config, ranks: int | None = None) -> None:
    """Rank 0, at every start, before the run's TensorBoard writer opens: RUN/tensorboard's session."""
    try:
        values, domains = describe(Path(run_dir), cfg, ranks)
        _write_once(RunDir(run_dir).tensorboard, values, domains)
    except (OSError, ValueError, TypeError, KeyError, tf.errors.OpError, hp_error.HParamsError) as exc:
        log.warning("TensorBoard HParams not written for %s: %s", run_dir, exc)


def describe(run_dir: Path, cfg: Config, ranks: int | None = None) -> tuple[dict[str, Any], list[hp.HParam]]:
    """(this run's hyper-parameter values, the experiment's hyper-parameters with their domains)."""
    point = sweep_point(run_dir)
    if point is not None:
        return _sweep_values(run_dir, cfg, *point)
    raw = cfg.to_dict()
    values = {key: lookup(raw, key) for key in PLAIN}
    values[GLOBAL_BATCH] = cfg.train.batch_size * ranks if ranks else cfg.train.global_batch
    domains = [hp.HParam(key, schema_domain(key)) for key in sorted(values)]
    return {k: v for k, v in values.items() if v is not None}, domains


def sweep_point(run_dir: Path) -> tuple[dict[str, list], list[dict], int] | None:
    """(grid, points, index) when run_dir is a point of the sweep whose sweep.json is beside it."""
    run = Path(os.path.abspath(run_dir))
    path = run.parent / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        grid, points = dict(manifest["grid"]), list(manifest["points"])
        index = next((p["index"] for p in points if point_dir(run.parent, p["index"]) == run), None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: not a sweep manifest (%s); %s is described as a plain run", path, exc, run_dir)
        return None
    return None if index is None else (grid, points, index)


def _sweep_values(run_dir: Path, cfg: Config, grid: dict, points: list[dict], index: int):
    """The grid keys with point `index`'s values; every point gets the same domains (the grid's)."""
    typed = {p["index"]: dict(_typed(o) for o in p["overrides"]) for p in points}
    keys = list(grid)
    seen: dict[str, list] = {k: [] for k in keys}  # each key's values in grid order: the domain
    for i in sorted(typed):
        for k in keys:
            if typed[i].get(k) not in seen[k]:
                seen[k].append(typed[i].get(k))
    # A key whose values are not all of one type (null among numbers, `all` among integers) is text.
    as_text = {k for k in keys if len({type(v) for v in seen[k]}) > 1 or not _scalar(seen[k][0])}
    mine = typed[index]
    values = {k: _text(mine.get(k)) if k in as_text else mine.get(k) for k in keys}
    domains = [hp.HParam(k, hp.Discrete([_text(v) for v in seen[k]] if k in as_text else seen[k])) for k in keys]
    raw = cfg.to_dict()
    differs = [
        f"{k}: {lookup(raw, k)!r} (the point: {mine.get(k)!r})" for k in keys if not _same(lookup(raw, k), mine.get(k))
    ]
    if differs:
        log.warning(
            "%s trains with another config than sweep point %d: %s; TensorBoard shows the point's values",
            run_dir,
            index,
            "; ".join(differs),
        )
    return values, domains


def _typed(override: str) -> tuple[str, Any]:
    """`train.lr=0.0001` -> ("train.lr", 0.0001), typed as the config types the key."""
    key, _, text = override.partition("=")
    key = key.strip()
    try:
        return key, lookup(load_config(None, [override]).to_dict(), key)
    except (ConfigError, KeyError):
        return key, yaml.safe_load(text) if text.strip() else None


def _scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def _text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)  # null, true, false: as in the YAML a user wrote
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    return isinstance(a, str) and isinstance(b, str) and Path(a).resolve() == Path(b).resolve()  # data paths


def lookup(raw: dict, key: str) -> Any:
    """cfg.to_dict()'s value at a dotted key (`train.class_weights.COVID-19`); KeyError if none."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def schema_domain(key: str) -> hp.Domain | None:
    """A plain run's domain from the config schema: a Literal's choices, a bounded number's range."""
    cls, parts = Config, key.split(".")
    tp, meta = None, {}
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return None
        tp, meta = typing.get_type_hints(cls)[part], fields[part].metadata
        if dataclasses.is_dataclass(tp) and i < len(parts) - 1:
            cls = tp
            continue
        if typing.get_origin(tp) is dict and i == len(parts) - 2:
            tp, meta = typing.get_args(tp)[1], {}
        elif i < len(parts) - 1:
            return None
        break
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    lo, hi = meta.get("min"), meta.get("max")
    if typing.get_origin(tp) is Literal and len({type(a) for a in typing.get_args(tp)}) == 1:
        return hp.Discrete(list(typing.get_args(tp)))
    if tp is bool:
        return hp.Discrete([False, True])
    if tp is int and lo is not None and hi is not None:
        return hp.IntInterval(int(lo), int(hi))
    if tp is float and lo is not None and hi is not None:
        return hp.RealInterval(float(lo), float(hi))
    return None


def metrics() -> list[hp.Metric]:
    return [hp.Metric(tag, dataset_type=hp.Metric.VALIDATION) for tag in METRICS]


def read_hparams_events(tb_dir: Path) -> list[tuple[Path, str, bytes]]:
    """(event file, tag, plugin content) of every HParams summary in a run's TensorBoard folder."""
    found = []
    for path in sorted(Path(tb_dir).glob("*tfevents*")):
        # TensorBoard's own reader: a record cut short by a killed job ends the file, as in TensorBoard.
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag in _TAGS and value.metadata.plugin_data.plugin_name == hp_metadata.PLUGIN_NAME:
                    found.append((path, value.tag, value.metadata.plugin_data.content))
    return found


def _content(summary) -> bytes:
    return summary.value[0].metadata.plugin_data.content


def _wanted(values: dict[str, Any], domains: list[hp.HParam]):
    session = hp_metadata.parse_session_start_info_plugin_data(_content(hp.hparams_pb(values, trial_id="")))
    experiment = hp_metadata.parse_experiment_plugin_data(_content(hp.hparams_config_pb(domains, metrics())))
    session.ClearField("start_time_secs")
    experiment.ClearField("time_created_secs")
    return session, experiment


def _held(events: list[tuple[Path, str, bytes]]):
    sessions, experiments = [], []
    for _, tag, content in events:
        if tag == hp_metadata.SESSION_START_INFO_TAG:
            session = hp_metadata.parse_session_start_info_plugin_data(content)
            session.ClearField("start_time_secs")
            sessions.append(session)
        else:
            experiment = hp_metadata.parse_experiment_plugin_data(content)
            experiment.ClearField("time_created_secs")
            experiments.append(experiment)
    return sessions, experiments


def _write_once(tb_dir: Path, values: dict[str, Any], domains: list[hp.HParam]) -> None:
    events = read_hparams_events(tb_dir) if tb_dir.is_dir() else []
    if events:
        session, experiment = _wanted(values, domains)
        if _held(events) == ([session], [experiment]):
            log.debug("%s: HParams session already written", tb_dir)
            return
        foreign = sorted({p.name for p, _, _ in events if not p.name.endswith(SUFFIX)})
        if foreign:
            log.warning("%s: %s already hold an HParams session; hpml adds none", tb_dir, ", ".join(foreign))
            return
    old = {p for p, _, _ in events} | set(tb_dir.glob(f"*tfevents*{SUFFIX}"))
    tb_dir.mkdir(parents=True, exist_ok=True)
    writer = tf.summary.create_file_writer(str(tb_dir), filename_suffix=SUFFIX)
    with writer.as_default():
        hp.hparams_config(hparams=domains, metrics=metrics())
        # trial_id "" -> no group name: TensorBoard names the row after the run (p003/tensorboard),
        # and two runs with equal values stay two rows instead of one averaged group.
        hp.hparams(values, trial_id="")
    writer.close()
    for path in old:  # the session of an earlier start with another config: replaced, not doubled
        path.unlink(missing_ok=True)
    if old:
        log.info("%s: HParams session replaced (the config changed since the last start)", tb_dir)
