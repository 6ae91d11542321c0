"""Experiment configuration: YAML -> typed dataclasses, `--set a.b=c` overrides, validation.

Every error names the key, the offending value and where it came from (the YAML file or the
`--set` option), because a researcher reading a SLURM log has nothing else to go on.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hpml.core.errors import UsageError

CLASSES: tuple[str, ...] = ("normal", "pneumonia", "COVID-19")


class ConfigError(UsageError, ValueError):
    """A configuration value or file that cannot be used."""


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, float | None]:
    return {"min": lo, "max": hi}


@dataclass
class DataConfig:
    sources: list[str] = field(default_factory=list)  # raw source folders (covidx build)
    split_dir: str | None = None  # train.txt / val.txt / test.txt
    shards: str | None = None  # preprocessed TFRecord folder (manifest.json)
    image_size: int = field(default=512, metadata=_range(16, 4096))
    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    stage_dir: str | None = None  # copy shards here (e.g. $TMPDIR) before training
    verify: bool = True  # check the shards' sha256 against the manifest before the first step


@dataclass
class PreprocessConfig:
    # resize: plain resize (HPML); covidnet: drop top fraction, central square (COVID-Net);
    # letterbox: keep aspect ratio and pad with black.
    policy: Literal["resize", "covidnet", "letterbox"] = "resize"
    top_crop: float = field(default=0.08, metadata=_range(0.0, 0.5))
    encoding: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = field(default=95, metadata=_range(1, 100))
    shard_mb: float = field(default=150.0, metadata=_range(0.001, 10_000))
    compression: Literal["none", "gzip"] = "none"
    # Fail (after writing the manifest and report) when more than this fraction is unusable.
    max_skipped: float = field(default=0.01, metadata=_range(0.0, 1.0))


@dataclass
class ModelConfig:
    backbone: Literal["tiny_cnn", "resnet50v2", "resnext50", "efficientnetb4", "mobilenetv2"] = "resnet50v2"
    head: Literal["flatten", "gap", "covidnext"] = "flatten"
    # null (random), `imagenet` (the file `hpml weights fetch` put in $HPML_WEIGHTS_DIR; compute
    # nodes never download), or a local Keras weights file for the backbone.
    weights: str | None = None
    # A whole-model weights file to start from (`hpml weights import` output, a best.h5, a checkpoint).
    init_from: str | None = None
    # The pixel range fed to the backbone: `imagenet` (what its ImageNet weights expect: [-1, 1]
    # for ResNet50V2/MobileNetV2, [0, 255] for EfficientNet), `unit` ([0, 1], as Covid19-HPML fed
    # ResNet50V2) or `symmetric` ([-1, 1]).
    input_scale: Literal["imagenet", "unit", "symmetric"] = "imagenet"
    dropout: float = field(default=0.0, metadata=_range(0.0, 0.95))


@dataclass
class AugmentConfig:
    rotation: float = field(default=10.0, metadata=_range(0.0, 180.0))  # degrees
    shift: float = field(default=0.1, metadata=_range(0.0, 0.5))
    flip: bool = True
    brightness: float = field(default=0.1, metadata=_range(0.0, 1.0))  # 1 +- this
    zoom: float = field(default=0.15, metadata=_range(0.0, 0.9))  # 1 +- this


@dataclass
class TrainConfig:
    epochs: int = field(default=10, metadata=_range(1, 100_000))
    batch_size: int = field(default=8, metadata=_range(1, 65_536))  # per rank
    # The global batch, whatever the rank count (Covid19-HPML's `--bs`): each rank takes
    # global_batch / ranks (must divide; it replaces batch_size), covid_percent applies to the
    # global batch, and lr (tuned for base_batch) scales with global_batch / base_batch.
    global_batch: int | None = field(default=None, metadata=_range(1, 1_000_000))
    lr: float = field(default=2e-5, metadata=_range(0.0, 10.0))
    optimizer: Literal["adam", "sgd"] = "adam"
    amsgrad: bool = True
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    base_batch: int = field(default=8, metadata=_range(1, 65_536))  # batch that `lr` is for
    warmup_epochs: float = field(default=0.0, metadata=_range(0.0, 1000.0))
    class_weights: dict[str, float] = field(default_factory=lambda: {"normal": 1.0, "pneumonia": 1.0, "COVID-19": 1.0})
    covid_percent: float | None = field(default=None, metadata=_range(0.0, 1.0))
    steps_per_epoch: int | None = field(default=None, metadata=_range(1, 10_000_000))
    # An epoch without steps_per_epoch: `pass`, one pass over the records (with covid_percent, the
    # non-COVID ones, batch_size - share per batch); `covidnet`, COVID-Net's and Covid19-HPML's
    # generator length, ceil(non-COVID / global batch) batches (a little over one pass).
    epoch_length: Literal["pass", "covidnet"] = "pass"
    # ReduceLROnPlateau on the validation loss, Keras semantics, HPML's values (train_keras.py).
    plateau_factor: float = field(default=0.7, metadata=_range(0.0, 1.0))
    plateau_patience: int = field(default=5, metadata=_range(0, 10_000))
    plateau_min_delta: float = field(default=0.01, metadata=_range(0.0, 1e9))
    plateau_min_lr: float = field(default=1e-6, metadata=_range(0.0, 10.0))
    plateau_cooldown: int = field(default=0, metadata=_range(0, 10_000))
    validate: bool = True  # false: train without a val split (no plateau, best = last epoch)
    # What names the best epoch (best.h5, the sweep report) and drives the plateau (hpml.train.selection).
    monitor: Literal["val_loss", "val_accuracy", "val_macro_f1", "val_covid_sensitivity"] = "val_loss"
    # Per-epoch weights files (checkpoints/epochs/): the N newest, `all` (as the seed keeps them), or 0.
    keep_checkpoints: int | Literal["all"] = field(default=0, metadata=_range(0, 1_000_000))
    shuffle_buffer: int = field(default=2048, metadata=_range(1, 10_000_000))  # records, per rank
    mixed_precision: bool = False
    # Gradient exchange (Horovod): fp16 halves the allreduce bytes; accumulate_steps sums that
    # many micro-batches locally and allreduces once (the global batch grows by that factor).
    compression: Literal["none", "fp16"] = "none"
    accumulate_steps: int = field(default=1, metadata=_range(1, 1024))
    jit_compile: bool = False  # XLA for the model's forward and backward pass
    # Steps between the ranks' preemption checks; null: chosen from the measured step and check
    # times so the checks cost < 0.5 % (hpml.train.preemption.CheckSchedule).
    stop_check_steps: int | None = field(default=None, metadata=_range(1, 1_000_000))
    seed: int = 0
    tracker: Literal["none", "mlflow"] = "none"  # mlflow: rank 0 logs to an MLflow file store (hpml.train.tracking)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class EvalConfig:
    split: Literal["val", "test"] = "val"
    checkpoint: str = "best"  # best | last | a path
    batch_size: int = field(default=16, metadata=_range(1, 65_536))
    bootstrap_resamples: int = field(default=2000, metadata=_range(0, 1_000_000))  # by patient
    bootstrap_seed: int = 0
    calibration_bins: int = field(default=10, metadata=_range(2, 1000))


@dataclass
class ClusterConfig:
    profile: str = "local"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _expected(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where YAML is ambiguous."""

    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(f"{where}: {key}: expected {expected}, got {_describe(value)}")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], key, where)
        for alternative in inner:  # the first alternative that takes the value
            try:
                return _coerce(value, alternative, key, where)
            except ConfigError:
                pass
        fail(" or ".join(_expected(a) for a in inner))
    if origin is Literal:
        if value not in args:
            fail("one of " + ", ".join(map(str, args)))
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail(f"a mapping (section {key})")
        return _build(tp, value, key, where)
    if tp is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if tp is float:
        # PyYAML reads `2e-5` (no dot) as a string; accept strings that are plainly numbers.
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail("a string")
        return value
    if origin is list:
        if not isinstance(value, list):
            fail("a list")
        return [_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        return {str(k): _coerce(v, args[1], f"{key}.{k}", where) for k, v in value.items()}
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module


def _build(cls: type, raw: dict[str, Any], prefix: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            raise ConfigError(f"{where}: unknown key '{key}' (known in this section: {', '.join(fields)})")
        value = _coerce(value, hints[name], key, where)
        lo, hi = fields[name].metadata.get("min"), fields[name].metadata.get("max")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ConfigError(f"{where}: {key}: {value!r} is out of range [{lo}, {hi}]")
        kwargs[name] = value
    return cls(**kwargs)


def _check(cfg: Config, where: str) -> None:
    """Rules that involve more than one value."""
    splits = cfg.data.splits
    if len(set(splits)) != len(splits) or not set(splits) <= {"train", "val", "test"} or not splits:
        raise ConfigError(f"{where}: data.splits: each of train, val, test at most once, got {splits}")
    weights = cfg.train.class_weights
    if set(weights) != set(CLASSES):
        raise ConfigError(
            f"{where}: train.class_weights: needs exactly the classes {list(CLASSES)}, " f"got {sorted(weights)}"
        )
    if any(w < 0 for w in weights.values()):
        raise ConfigError(f"{where}: train.class_weights: weights must be >= 0, got {weights}")
    n, fixed = cfg.train.accumulate_steps, cfg.train.steps_per_epoch
    if fixed and fixed % n:  # an update straddling two epochs would lose its micro-batches at a checkpoint
        raise ConfigError(
            f"{where}: train.steps_per_epoch: {fixed} micro-batches is not a multiple of "
            f"train.accumulate_steps ({n})"
        )
    check = cfg.train.stop_check_steps
    if check and check % n:  # a stop must fall where an optimizer update is complete
        raise ConfigError(f"{where}: train.stop_check_steps: {check} is not a multiple of train.accumulate_steps ({n})")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_override(item: str) -> dict[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected section.key=value")
    dotted, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item}: value is not valid YAML: {exc}") from None
    out: dict[str, Any] = {}
    node = out
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def build_dataclass(cls: type, raw: dict[str, Any], where: str) -> Any:
    """Validate a mapping against any config dataclass (e.g. a cluster profile)."""
    return _build(cls, raw, "", where)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {_describe(raw)}")
    return raw


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load `path` (or the defaults), apply `section.key=value` overrides, validate."""
    where = str(path) if path else "<defaults>"
    cfg = _build(Config, load_yaml(path) if path else {}, "", where)
    _check(cfg, where)
    raw = cfg.to_dict()
    for item in overrides:
        patch = _parse_override(item)
        raw = _merge(raw, patch)
        cfg = _build(Config, raw, "", f"--set {item}")
        _check(cfg, f"--set {item}")
    return cfg


def for_world(cfg: Config, size: int, where: str = "train.global_batch") -> Config:
    """The config a job of `size` ranks trains with: train.global_batch fixes the per-rank batch."""
    g = cfg.train.global_batch
    if g is None:
        return cfg
    if g % size:
        raise ConfigError(f"{where}: {g} images cannot be split evenly over {size} ranks; use a multiple of {size}")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=g // size))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(cfg.to_yaml(), encoding="utf-8")
