"""Weights from other files into an hpml model: the seed's Keras hdf5, hpml's .h5, hpml checkpoints.

The seed (sara-nl/Covid19-HPML, XRAY/COVID-NET/model.py:153-181) builds inline on ResNet50V2's
output: Flatten, Dense(1024) (only with --datapipeline covidx, the default), Dense(256), Dense(3,
name='FC_3'); ModelCheckpoint(save_weights_only=True) (train_keras.py:161-163) saves it through
multi_gpu_model(model, gpus=4) (:194). So its .hdf5 holds the plain model (groups conv1_conv ...
post_relu, flatten, dense, dense_1, FC_3) or the parallel one (input_1, lambda*, the template as ONE
group holding every weight, weight_names like conv1_conv/kernel:0, then FC_3, a weightless
Concatenate). hpml nests its backbone as one layer, so Keras' load_weights sees 4 layers against
105. Here layers match by name (ResNet50V2's are the same in both), the head by position from the
end (the Dense layers before FC_3 -> head_fc1, head_fc2; FC_3 -> head_out), every tensor is
shape-checked, and nothing is written into the model unless everything fits (or allow_partial).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

from hpml.core.errors import SourceError, UsageError

SHOWN = 5  # problems named in an error message
_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"  # a variable's key suffix in a TF2 object-based checkpoint


class WeightsImportError(SourceError):
    """A weights file that cannot be read, or does not fit the model; the message names the file."""


@dataclass
class _Weight:
    name: str  # kernel, bias, gamma, moving_mean...
    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]


@dataclass
class _Source:
    key: str  # matched against a model layer's name (hdf5) or object path (checkpoint)
    label: str  # as the report shows it
    weights: list[_Weight]


@dataclass
class _Target:
    label: str  # backbone_resnet50v2/conv1_conv; the layer's own name follows the last /
    path: str  # object path in a TF2 checkpoint: layer_with_weights-0/layer_with_weights-3
    variables: list[tf.Variable]


@dataclass
class LayerMatch:
    source: str
    target: str
    shapes: list[tuple[int, ...]]
    problem: str = ""  # why it was not loaded: a tensor count or shape differs


@dataclass
class ImportReport:
    source: Path
    layout: str
    mapped: list[LayerMatch] = field(default_factory=list)
    mismatched: list[LayerMatch] = field(default_factory=list)  # paired, but a shape differs: not loaded
    unfilled: list[str] = field(default_factory=list)  # model layers with weights that nothing paired with
    unused: list[str] = field(default_factory=list)  # file layers with weights that went nowhere

    @property
    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("mapped", "mismatched", "unfilled", "unused")}

    def problems(self) -> list[str]:
        """What leaves part of the model without weights: mismatches, then unfilled layers."""
        unfilled = [f"{t}: nothing in the file" for t in self.unfilled]
        return [f"{m.source} -> {m.target}: {m.problem}" for m in self.mismatched] + unfilled

    def summary(self) -> str:
        c = self.counts
        return (
            f"{c['mapped']} layers mapped, {c['mismatched']} mismatched, {c['unfilled']} unfilled, {c['unused']} unused"
        )

    def lines(self) -> list[str]:
        out = [f"{self.source} ({self.layout}): {self.summary()}"]
        out += [f"  mapped    {m.source} -> {m.target}  {_shapes(m.shapes)}" for m in self.mapped]
        out += [f"  MISMATCH  {m.source} -> {m.target}: {m.problem}" for m in self.mismatched]
        out += [f"  UNFILLED  {t}" for t in self.unfilled]
        out += [f"  unused    {s}" for s in self.unused]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return " ".join("x".join(map(str, s)) or "scalar" for s in shapes)


def import_weights(source: Path, model: tf.keras.Model, allow_partial: bool = False) -> ImportReport:
    """Fill `model` (built by hpml.models.build.build_model) from a seed or hpml weights file.

    `source`: a Keras hdf5 (the seed's plain or multi_gpu_model layout, hpml's best.h5) or an
    hpml checkpoint prefix (`.../checkpoints/ckpt-12`, optimizer ignored). Raises
    WeightsImportError if the file is unreadable, or if any model layer would be left unfilled
    or any shape differs, unless `allow_partial`; the model is untouched when it raises.
    """
    source = Path(source)
    targets = list(_targets(model))
    with _open(source) as (layout, sources, by_path):
        report = ImportReport(source, layout)
        loads = []
        for src, tgt in _pair(sources, targets, by_path):
            weights, problem = _fit(src, tgt)
            match = LayerMatch(src.label, tgt.label, [tuple(v.shape) for v in tgt.variables], problem)
            (report.mismatched if problem else report.mapped).append(match)
            if not problem:
                loads.append((weights, tgt.variables))
        done = report.mapped + report.mismatched
        report.unfilled = [t.label for t in targets if t.label not in {m.target for m in done}]
        report.unused = [s.label for s in sources if s.label not in {m.source for m in done}]
        problems = report.problems()
        if not report.mapped or (problems and not allow_partial):
            shown = "; ".join(problems[:SHOWN]) + (
                f"; ... {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
            )
            raise WeightsImportError(
                f"{source} does not fit this model: {shown or 'no layer in common'} ({layout}: {report.summary()}); "
                "allow_partial loads only what matches"
            )
        for weights, variables in loads:  # only now: a refused file leaves the model as it was
            for w, v in zip(weights, variables, strict=True):
                v.assign(np.asarray(w.read(), dtype=v.dtype.as_numpy_dtype))
    return report


def save_weights_file(model: tf.keras.Model, out: Path) -> None:
    """Write `model`'s weights as an hpml .h5 (model.save_weights), atomically: a temp name in the
    same folder, then a rename, so a crash never leaves a half-written file under `out`. Every
    hpml weights file is written here: imported weights, best.h5, the per-epoch files."""
    out = Path(out)
    if out.suffix not in (".h5", ".hdf5"):
        raise UsageError(f"{out}: hpml weights files are HDF5 and end in .h5")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")  # Keras picks the format from the suffix
    try:
        model.save_weights(str(tmp))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _targets(model: tf.keras.Model, label: str = "", path: str = "") -> Iterator[_Target]:
    """Model layers with weights, nested models opened, with the object path a TF2 checkpoint
    gives each: Keras numbers only layers that have weights (layer_with_weights-N)."""
    index = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        here = f"{path}layer_with_weights-{index}"
        index += 1
        if isinstance(layer, tf.keras.Model):
            yield from _targets(layer, f"{label}{layer.name}/", f"{here}/")
        else:
            yield _Target(f"{label}{layer.name}", here, list(layer.weights))


@contextmanager
def _open(source: Path) -> Iterator[tuple[str, list[_Source], bool]]:
    """(layout, layers with weights in file order, whether to match by checkpoint object path)."""
    if Path(f"{source}.index").is_file():
        yield "hpml TensorFlow checkpoint, weights only", _checkpoint_layers(source), True
    elif source.is_file() and h5py.is_hdf5(source):
        with h5py.File(source, "r") as f:
            yield *_h5_layers(f, source), False
    else:
        why = "is a folder" if source.is_dir() else "is not an HDF5 file" if source.exists() else "does not exist"
        raise WeightsImportError(
            f"{source} {why}: give a Keras .h5/.hdf5 weights file or a checkpoint prefix (ckpt-12, with ckpt-12.index)"
        )


def _names(group: h5py.Group, attr: str) -> list[str]:
    # Keras splits attributes over 64 KiB into attr0, attr1, ...; TF1-era files store bytes.
    chunks = [group.attrs[attr]] if attr in group.attrs else []
    while f"{attr}{len(chunks)}" in group.attrs:
        chunks.append(group.attrs[f"{attr}{len(chunks)}"])
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for chunk in chunks for v in chunk]


def _h5_layers(f: h5py.File, source: Path) -> tuple[str, list[_Source]]:
    root = f["model_weights"] if "model_weights" in f else f  # a whole model saved with model.save()
    if not any(a.startswith("layer_names") for a in root.attrs):
        raise WeightsImportError(f"{source}: an HDF5 file without Keras weights (no layer_names attribute)")
    layers: list[_Source] = []
    nested = []
    for group_name in _names(root, "layer_names"):
        group = root[group_name]
        by_layer: dict[str, list[_Weight]] = {}
        for weight_name in _names(group, "weight_names"):
            prefix, _, short = weight_name.rpartition("/")
            dataset = group[weight_name]
            weight = _Weight(short.partition(":")[0], tuple(dataset.shape), lambda d=dataset: d[()])
            by_layer.setdefault(prefix.rpartition("/")[2], []).append(weight)
        if len(by_layer) > 1:  # a nested model: its group lists every inner layer's weights
            nested.append(group_name)
            layers += [_Source(name, f"{group_name}/{name}", ws) for name, ws in by_layer.items()]
        elif by_layer:  # the group's name is the layer's, whatever its variables were called
            layers.append(_Source(group_name, group_name, next(iter(by_layer.values()))))
    seed = f"model nested as layer {', '.join(nested)} (the seed's multi_gpu_model layout)" if nested else "plain"
    return ("hpml weights" if any(n.startswith("backbone_") for n in nested) else f"Keras hdf5, {seed}"), layers


def _checkpoint_layers(prefix: Path) -> list[_Source]:
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError) as exc:
        raise WeightsImportError(f"{prefix}: unreadable TensorFlow checkpoint ({str(exc).splitlines()[0]})") from exc
    shapes = reader.get_variable_to_shape_map()
    keys = [k for k in shapes if k.endswith(_VALUE) and ".OPTIMIZER_SLOT" not in k]
    root = "model/" if any(k.startswith("model/") for k in keys) else ""  # tf.train.Checkpoint(model=...)
    keys = [k for k in keys if k.startswith(root) and not k.startswith(("optimizer/", "save_counter/"))]
    if not keys:
        raise WeightsImportError(
            f"{prefix}: no Keras model in this checkpoint (a TF1 Saver checkpoint, like the seed's "
            "cp-NN.ckpt?); import the seed's .hdf5 instead"
        )
    layers: dict[str, list[_Weight]] = {}
    natural = [(tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k)), k) for k in keys]
    for _, key in sorted(natural):
        path, _, attr = key[len(root) : -len(_VALUE)].rpartition("/")
        layers.setdefault(path, []).append(_Weight(attr, tuple(shapes[key]), lambda k=key: reader.get_tensor(k)))
    return [_Source(path, f"{root}{path}", ws) for path, ws in layers.items()]


def _pair(sources: list[_Source], targets: list[_Target], by_path: bool) -> list[tuple[_Source, _Target]]:
    free = {(t.path if by_path else t.label.rpartition("/")[2]): t for t in targets}
    pairs, last = [], -1
    for i, src in enumerate(sources):
        if (tgt := free.pop(src.key, None)) is not None:
            pairs.append((src, tgt))
            last = i
    if not by_path:
        # The seed's head Dense layers are auto-named (dense, dense_1, numbered by session): pair the
        # file's layers after its last named match with the model's unpaired head_* layers, from
        # the end, so FC_3 -> head_out and the Dense layers before it -> head_fc2, head_fc1.
        head = [t for t in free.values() if t.label.startswith("head_")]
        pairs += zip(reversed(sources[last + 1 :]), reversed(head), strict=False)
    return pairs


def _fit(src: _Source, tgt: _Target) -> tuple[list[_Weight], str]:
    """The file's tensors in the order of the layer's variables, or why they do not fit."""
    if len(src.weights) != len(tgt.variables):
        return [], f"{len(src.weights)} tensors in the file, {len(tgt.variables)} in the model"
    wanted = [v.name.rpartition("/")[2].partition(":")[0] for v in tgt.variables]
    weights = src.weights
    by_name = {w.name: w for w in weights}
    if len(by_name) == len(weights) and sorted(by_name) == sorted(wanted):
        weights = [by_name[n] for n in wanted]  # by name where both sides name them alike
    for w, v, n in zip(weights, tgt.variables, wanted, strict=True):
        if w.shape != tuple(v.shape):
            return [], f"{n} is {_shapes([w.shape])} in the file, {_shapes([tuple(v.shape)])} in the model"
    return weights, ""
