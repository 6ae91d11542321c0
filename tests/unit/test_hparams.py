"""TensorBoard HParams (hpml.train.hparams): a run's and a sweep point's session, read back as TensorBoard does.

Each test reads the event files twice: with TensorFlow's own reader (`summary_iterator`, parsed
with the hparams plugin's metadata functions) and through TensorBoard's hparams backend over a
logdir (the multiplexer, `get_experiment` and `list_session_groups`: what the HPARAMS tab asks for),
with the validation scalars written by the training's own `record_epoch`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import tensorflow as tf
from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups, metadata

from hpml.core import history
from hpml.core.config import for_world, load_config
from hpml.core.runfiles import RunDir
from hpml.train import hparams
from hpml.train.epoch_end import record_epoch

# A 2 x 2 sweep as `hpml submit sweep --grid train.lr=1e-4,2e-3 --grid model.head=flatten,gap` writes
# it (a sweep YAML's `2e-3` arrives as the string "2e-3"): point i = itertools.product order.
GRID = {"train.lr": [0.0001, "2e-3"], "model.head": ["flatten", "gap"]}
POINTS = {  # index -> (its overrides, the values its session must hold), written out by hand
    0: (["train.lr=0.0001", "model.head=flatten"], {"train.lr": 1e-4, "model.head": "flatten"}),
    1: (["train.lr=0.0001", "model.head=gap"], {"train.lr": 1e-4, "model.head": "gap"}),
    2: (["train.lr=2e-3", "model.head=flatten"], {"train.lr": 2e-3, "model.head": "flatten"}),
    3: (["train.lr=2e-3", "model.head=gap"], {"train.lr": 2e-3, "model.head": "gap"}),
}


def value(v):
    """A google.protobuf.Value as Python."""
    return getattr(v, v.WhichOneof("kind"))


def hparams_events(run: Path) -> list[tuple[str, bytes]]:
    """(tag, plugin content) of every HParams summary under RUN/tensorboard, by TensorFlow's reader."""
    out = []
    for path in sorted(RunDir(run).tensorboard.glob("*tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME:
                    out.append((v.tag, v.metadata.plugin_data.content))
    return out


def sessions(run: Path) -> list[dict]:
    return [
        {k: value(v) for k, v in metadata.parse_session_start_info_plugin_data(c).hparams.items()}
        for tag, c in hparams_events(run)
        if tag == metadata.SESSION_START_INFO_TAG
    ]


def experiments(run: Path) -> list[api_pb2.Experiment]:
    found = [metadata.parse_experiment_plugin_data(c) for t, c in hparams_events(run) if t == metadata.EXPERIMENT_TAG]
    for e in found:
        e.ClearField("time_created_secs")
    return found


def domains(experiment: api_pb2.Experiment) -> dict[str, list]:
    return {h.name: [value(v) for v in h.domain_discrete.values] for h in experiment.hparam_infos}


def tensorboard_view(logdir: Path) -> tuple[api_pb2.Experiment, dict[str, tuple[dict, dict]]]:
    """What the HPARAMS tab of `tensorboard --logdir LOGDIR` gets: the experiment, and per row (a
    session, named by its run) its hyper-parameters and metric values."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    backend = backend_context.Context(
        base_plugin.TBContext(logdir=str(logdir), data_provider=provider, multiplexer=mux)
    )
    request = tb_context.RequestContext()
    experiment = get_experiment.Handler(request, backend, "", api_pb2.GetExperimentRequest()).run()
    allowed = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING]
    query = api_pb2.ListSessionGroupsRequest(allowed_statuses=allowed, start_index=0, slice_size=1000)
    groups = list_session_groups.Handler(request, backend, "", query).run().session_groups
    rows = {}
    for group in groups:
        (session,) = group.sessions
        metrics = {m.name.tag: m.value for m in session.metric_values}
        rows[session.name] = ({k: value(v) for k, v in group.hparams.items()}, metrics)
    return experiment, rows


def train_epochs(run: Path, val_losses: list[float]) -> None:
    """The scalars of a training, written as the loop writes them (rank 0, after write_hparams)."""
    writer = tf.summary.create_file_writer(str(RunDir(run).tensorboard))
    for epoch, val_loss in enumerate(val_losses, 1):
        row = {k: 0.5 for k in history.FIELDS}
        row.update(epoch=epoch - 1, val_loss=val_loss, val_confusion="1 0 0/0 1 0/0 0 1", seconds=1.0)
        row["val_sensitivity_COVID-19"] = val_loss / 2
        record_epoch(run, writer, row, epoch, len(val_losses), None)
    writer.close()


def make_sweep(sweep: Path) -> None:
    sweep.mkdir(parents=True)
    manifest = {
        "grid": GRID,
        "set": ["train.epochs=2"],
        "points": [
            {"index": i, "overrides": o, "label": " ".join(x.split(".")[-1] for x in o)} for i, (o, _) in POINTS.items()
        ],
        "submissions": [],
        "cost": {},
        "epochs": {str(i): 2 for i in POINTS},
    }
    (sweep / "sweep.json").write_text(json.dumps(manifest, indent=1))


def test_a_plain_run_records_its_config_and_tensorboard_lists_it_with_the_validation_metrics(tmp_path):
    cfg = load_config(
        None,
        [
            "train.lr=1e-4",
            "model.head=gap",
            "train.covid_percent=0.25",
            "train.class_weights.COVID-19=6",
            "train.global_batch=16",
        ],
    )
    run = tmp_path / "run"
    hparams.write_hparams(run, for_world(cfg, 2), 2)  # as the loop calls it: the config of a 2-rank job
    train_epochs(run, [0.9, 0.4])
    expected = {
        "train.lr": 1e-4,
        "train.batch_size": 8,
        "train.global_batch": 16,
        "train.optimizer": "adam",
        "train.epochs": 10,
        "train.covid_percent": 0.25,
        "train.class_weights.COVID-19": 6.0,
        "train.monitor": "val_loss",
        "model.backbone": "resnet50v2",
        "model.head": "gap",
        "model.dropout": 0.0,
        "data.image_size": 512,
    }
    assert sessions(run) == [expected]
    (experiment,) = experiments(run)
    assert [m.name.tag for m in experiment.metric_infos] == list(hparams.METRICS)
    assert set(hparams.METRICS) <= set(history.FIELDS)  # record_epoch's scalars
    assert domains(experiment)["model.head"] == ["covidnext", "flatten", "gap"]  # the schema's choices
    assert {h.name for h in experiment.hparam_infos} == set(expected)

    view, rows = tensorboard_view(tmp_path)
    assert [m.name.tag for m in view.metric_infos] == list(hparams.METRICS)
    assert list(rows) == ["run/tensorboard"]
    assert rows["run/tensorboard"][0] == expected
    assert rows["run/tensorboard"][1] == pytest.approx(
        {
            "val_loss": 0.4,
            "val_accuracy": 0.5,
            "val_macro_f1": 0.5,
            "val_sensitivity_COVID-19": 0.2,
            "val_ppv_COVID-19": 0.5,
        }
    )  # the last epoch's


def test_a_value_that_is_null_is_left_out_and_the_global_batch_needs_the_rank_count(tmp_path):
    values, _ = hparams.describe(tmp_path / "run", load_config())
    assert "train.covid_percent" not in values and "train.global_batch" not in values
    assert values["train.batch_size"] == 8
    values, _ = hparams.describe(tmp_path / "run", load_config(), ranks=4)
    assert values["train.global_batch"] == 32


def test_each_sweep_point_records_exactly_the_grid_keys_with_its_own_values(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    make_sweep(sweep)
    caplog.set_level(logging.WARNING)
    for i, (overrides, _) in POINTS.items():
        hparams.write_hparams(sweep / f"p{i:03d}", load_config(None, ["train.epochs=2", *overrides]), 1)
        train_epochs(sweep / f"p{i:03d}", [1.0, 0.1 * (i + 1)])  # each point's own last val_loss
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    for i, (_, expected) in POINTS.items():
        assert sessions(sweep / f"p{i:03d}") == [expected], f"p{i:03d}"
    first = experiments(sweep / "p000")
    assert len(first) == 1
    for i in POINTS:  # TensorBoard takes the first experiment it finds: every point writes the same
        assert experiments(sweep / f"p{i:03d}") == first
    assert domains(first[0]) == {"train.lr": [1e-4, 2e-3], "model.head": ["flatten", "gap"]}
    assert [m.name.tag for m in first[0].metric_infos] == list(hparams.METRICS)

    view, rows = tensorboard_view(sweep)  # tensorboard --logdir SWEEP
    assert domains(view) == {"train.lr": [1e-4, 2e-3], "model.head": ["flatten", "gap"]}
    assert sorted(rows) == [f"p{i:03d}/tensorboard" for i in POINTS]
    for i, (_, expected) in POINTS.items():
        got, metrics = rows[f"p{i:03d}/tensorboard"]
        assert got == expected, f"p{i:03d}"
        assert metrics["val_loss"] == pytest.approx(0.1 * (i + 1)), f"p{i:03d}: another point's metrics"


def test_a_point_that_trains_another_points_config_is_named(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    make_sweep(sweep)
    caplog.set_level(logging.WARNING)
    hparams.write_hparams(sweep / "p001", load_config(None, POINTS[2][0]))  # p002's config in p001
    assert sessions(sweep / "p001") == [POINTS[1][1]]  # the sweep's point: within the grid's domains
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "sweep point 1" in warning and "train.lr: 0.002 (the point: 0.0001)" in warning
    assert "model.head: 'flatten' (the point: 'gap')" in warning


def test_a_run_beside_a_sweep_that_is_not_one_of_its_points_is_a_plain_run(tmp_path):
    make_sweep(tmp_path / "sweep")
    values, _ = hparams.describe(tmp_path / "sweep" / "p004", load_config())
    assert "train.lr" in values and "model.backbone" in values  # PLAIN, not the grid


def test_grid_values_are_typed_as_the_config_types_them_and_mixed_ones_become_text(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    grid = {"model.dropout": [0, 0.5], "train.covid_percent": [None, 0.25]}
    overrides = [
        ["model.dropout=0", "train.covid_percent=null"],
        ["model.dropout=0", "train.covid_percent=0.25"],
        ["model.dropout=0.5", "train.covid_percent=null"],
        ["model.dropout=0.5", "train.covid_percent=0.25"],
    ]
    points = [{"index": i, "overrides": o} for i, o in enumerate(overrides)]
    (sweep / "sweep.json").write_text(json.dumps({"grid": grid, "points": points}))
    values, hps = hparams.describe(sweep / "p001", load_config(None, overrides[1]))
    assert values == {"model.dropout": 0.0, "train.covid_percent": "0.25"}
    assert isinstance(values["model.dropout"], float)
    assert {h.name: h.domain.values for h in hps} == {
        "model.dropout": [0.0, 0.5],
        "train.covid_percent": ["0.25", "null"],  # hp.Discrete sorts
    }


def test_a_resumed_run_keeps_one_session_and_a_changed_config_replaces_it(tmp_path):
    run = tmp_path / "run"
    cfg = load_config(None, ["train.lr=1e-4"])
    hparams.write_hparams(run, cfg, 1)
    train_epochs(run, [0.9])
    (first,) = RunDir(run).tensorboard.glob(f"*{hparams.SUFFIX}")
    stamp = first.stat().st_mtime_ns
    hparams.write_hparams(run, cfg, 1)  # the resumption: nothing new
    assert list(RunDir(run).tensorboard.glob(f"*{hparams.SUFFIX}")) == [first] and first.stat().st_mtime_ns == stamp
    assert len(sessions(run)) == 1 and len(experiments(run)) == 1

    hparams.write_hparams(run, load_config(None, ["train.lr=3e-4"]), 1)  # --restart with another lr
    assert not first.exists()
    (only,) = sessions(run)
    assert only["train.lr"] == 3e-4 and len(experiments(run)) == 1
    _, rows = tensorboard_view(tmp_path)
    assert rows["run/tensorboard"][0]["train.lr"] == 3e-4


def test_a_session_written_by_another_tool_is_not_doubled(tmp_path, caplog):
    from tensorboard.plugins.hparams import api as hp

    run = tmp_path / "run"
    writer = tf.summary.create_file_writer(str(RunDir(run).tensorboard))
    with writer.as_default():
        hp.hparams({"lr": 0.1})
    writer.close()
    caplog.set_level(logging.WARNING)
    hparams.write_hparams(run, load_config(), 1)
    assert sessions(run) == [{"lr": 0.1}]
    assert "already hold an HParams session" in caplog.text


def test_a_failure_is_a_warning_not_a_stopped_training(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    RunDir(run).tensorboard.write_text("not a folder")
    caplog.set_level(logging.WARNING)
    hparams.write_hparams(run, load_config(), 1)
    assert "TensorBoard HParams not written" in caplog.text
