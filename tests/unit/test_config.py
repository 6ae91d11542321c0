from pathlib import Path

import pytest
import yaml
from conftest import REPO, hpml

from hpml.core.config import ConfigError, for_world, load_config, save_config
from hpml.train.epoch_plan import covid_per_batch

SEED = REPO / "configs" / "covidnet-resnet50v2-512.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_seed_config_reproduces_the_seed_settings():
    cfg = load_config(SEED)
    assert (cfg.model.backbone, cfg.model.head, cfg.data.image_size) == ("resnet50v2", "flatten", 512)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (2e-5, 8, 10)
    assert cfg.train.class_weights == {"normal": 1.0, "pneumonia": 1.0, "COVID-19": 25.0}
    # data.py:166-167: a batch of 8 with ONE position replaced by a COVID-19 image; :144-146 the length
    t = cfg.train
    assert t.global_batch == 8 and t.base_batch == 8  # --bs 8 was the global batch; lr 2e-5 for it
    assert covid_per_batch(t.global_batch, t.covid_percent) == 1 and t.epoch_length == "covidnet"
    assert t.augment.zoom == 0 and (t.augment.rotation, t.augment.shift, t.augment.brightness) == (10, 0.1, 0.1)
    assert (cfg.model.weights, cfg.model.input_scale) == ("imagenet", "unit")  # weights='imagenet', /255
    assert (t.optimizer, t.amsgrad, t.keep_checkpoints, t.monitor) == ("adam", True, "all", "val_loss")
    plateau = (t.plateau_factor, t.plateau_patience, t.plateau_min_delta, t.plateau_min_lr)
    assert plateau == (0.7, 5, 0.01, 1e-6)


def test_a_key_with_two_kinds_of_value(tmp_path):
    assert load_config(None, ["train.keep_checkpoints=all"]).train.keep_checkpoints == "all"
    assert load_config(None, ["train.keep_checkpoints=4"]).train.keep_checkpoints == 4
    with pytest.raises(ConfigError, match=r"train.keep_checkpoints: expected an integer or one of all, got 'most'"):
        load_config(None, ["train.keep_checkpoints=most"])
    with pytest.raises(ConfigError, match=r"train.keep_checkpoints: -1 is out of range"):
        load_config(None, ["train.keep_checkpoints=-1"])


def test_all_shipped_configs_load():
    for path in (REPO / "configs").glob("*.yaml"):
        load_config(path)


def test_overrides_apply_in_order_and_parse_yaml_values():
    cfg = load_config(SEED, ["train.lr=1e-4", "train.epochs=3", "model.weights=/w.h5", "train.lr=3e-4"])
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 3 and cfg.model.weights == "/w.h5"
    cfg = load_config(SEED, ["train.augment.flip=false", "model.weights=null"])
    assert cfg.train.augment.flip is False and cfg.model.weights is None


@pytest.mark.parametrize(
    "text, words",
    [
        ("train:\n  lrr: 0.1\n", ["train.lrr", "unknown key"]),
        ("train:\n  lr: fast\n", ["train.lr", "'fast'", "a number"]),
        ("train:\n  epochs: 2.5\n", ["train.epochs", "integer"]),
        ("train:\n  epochs: 0\n", ["train.epochs", "out of range"]),
        ("model:\n  backbone: vgg\n", ["model.backbone", "'vgg'", "resnet50v2"]),
        ("train:\n  class_weights: {normal: 1}\n", ["train.class_weights"]),
        ("train: [1, 2]\n", ["train", "mapping"]),
        ("train:\n  lr: [0.1\n", ["malformed YAML"]),
        ("- a\n- b\n", ["top level"]),
    ],
)
def test_bad_config_names_key_value_and_file(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_bad_override_names_the_option():
    with pytest.raises(ConfigError, match=r"--set train.batch_size=big: train.batch_size"):
        load_config(SEED, ["train.batch_size=big"])
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(SEED, ["trian.lr=1"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(SEED, ["train.lr=1e-4"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_cli_config_show_prints_override_and_fails_on_typo(tmp_path):
    out = hpml("config", "show", "--config", SEED, "--set", "train.lr=1e-4").stdout
    assert yaml.safe_load(out)["train"]["lr"] == 1e-4
    bad = write(tmp_path, "train:\n  epochz: 3\n")
    proc = hpml("config", "show", "--config", bad, check=False)
    assert proc.returncode == 2
    assert "train.epochz" in proc.stderr and str(bad) in proc.stderr


def test_cli_help_lists_subcommands():
    out = hpml("--help").stdout
    commands = [
        "config show",
        "covidx build",
        "covidx import",
        "synth",
        "preprocess",
        "shards verify",
        "train",
        "evaluate",
        "predict",
        "export",
        "submit",
        "demo",
        "bench preprocess",
        "bench input",
        "bench scaling",
    ]
    for command in {c.split()[0] for c in commands}:
        assert command in out
    for command in commands:
        assert "--config" in hpml(*command.split(), "--help").stdout, command


def test_global_batch_fixes_the_batch_per_rank_for_any_rank_count():
    cfg = load_config(SEED)
    assert [for_world(cfg, n).train.batch_size for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    per_rank = load_config(SEED, ["train.global_batch=null"])
    assert for_world(per_rank, 4).train.batch_size == 8  # without it: batch_size per rank
    with pytest.raises(ConfigError, match="train.global_batch: 8 images cannot be split evenly over 3 ranks"):
        for_world(cfg, 3)


@pytest.mark.parametrize("splits", ["[train, train]", "[train, holdout]", "[]"])
def test_data_splits_are_distinct_known_splits(splits):
    with pytest.raises(ConfigError, match=r"data.splits: each of train, val, test at most once"):
        load_config(None, [f"data.splits={splits}"])
