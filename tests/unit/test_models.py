"""Every backbone with both heads builds at 512 px with the known parameter counts."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from hpml.core.config import ModelConfig
from hpml.models.backbones import BACKBONES
from hpml.models.build import build_model

# Keras' own counts without the top (ResNeXt50-32x4d: torchvision's 22,979,904 without the
# classifier, plus 68,224 BatchNorm moving statistics that Keras counts as parameters).
BACKBONE = {
    "tiny_cnn": (78_976, 96, 64),
    "resnet50v2": (23_564_800, 2048, 16),
    "resnext50": (23_048_128, 2048, 16),
    "efficientnetb4": (17_673_823, 1792, 16),
    "mobilenetv2": (2_257_984, 1280, 16),
}


def head_params(head: str, channels: int, grid: int) -> int:
    if head == "gap":
        return channels * 3 + 3
    flat = grid * grid * channels
    return flat * 1024 + 1024 + 1024 * 256 + 256 + 256 * 3 + 3


COUNT = """
import json, sys
from hpml.core.config import ModelConfig
from hpml.models.build import build_model, parameter_counts
out = {}
for head in ("gap", "flatten"):
    model = build_model(ModelConfig(backbone=sys.argv[1], head=head), 512)
    out[head] = {**parameter_counts(model), "output": list(model.output_shape)}
    del model
print(json.dumps(out))
"""


@pytest.mark.slow  # builds every backbone: 20-35 s each
@pytest.mark.parametrize("backbone", BACKBONE)
def test_builds_at_512_with_expected_parameters(backbone):
    # In a child process: the flatten heads hold up to 2 GB each, which a long-lived pytest keeps.
    proc = subprocess.run(
        [sys.executable, "-c", COUNT, backbone],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    backbone_params, channels, grid = BACKBONE[backbone]
    for head in ("gap", "flatten"):
        assert counts[head]["backbone"] == backbone_params
        assert counts[head]["head"] == head_params(head, channels, grid)
        assert counts[head]["output"] == [None, 3]
    if backbone == "resnet50v2":
        assert counts["flatten"]["head"] == 537_135_107  # the seed's ~537 M-parameter first Dense, faithfully


def test_weights_only_from_a_local_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="local files only"):
        build_model(ModelConfig(backbone="tiny_cnn", head="gap", weights=str(tmp_path / "imagenet.h5")), 64)
    inputs = tf.keras.layers.Input((64, 64, 3))
    pretrained = tf.keras.Model(inputs, BACKBONES["tiny_cnn"](inputs))
    pretrained.save_weights(str(tmp_path / "backbone.h5"))
    model = build_model(ModelConfig(backbone="tiny_cnn", head="gap", weights=str(tmp_path / "backbone.h5")), 64)
    loaded = [w for layer in model.layers if not layer.name.startswith("head_") for w in layer.get_weights()]
    assert len(loaded) == len(pretrained.get_weights())
    assert all((a == b).all() for a, b in zip(loaded, pretrained.get_weights(), strict=True))


@pytest.mark.slow  # a train step of ResNeXt50 and MobileNetV2: 15-20 s each
@pytest.mark.parametrize("backbone", ["resnext50", "mobilenetv2"])
def test_small_input_train_step(backbone):
    """The grouped convolutions of ResNeXt (and MobileNet's depthwise ones) train on CPU too."""
    tf.keras.backend.clear_session()
    model = build_model(ModelConfig(backbone=backbone, head="gap"), 64)
    model.compile("adam", "sparse_categorical_crossentropy")
    loss = model.train_on_batch(tf.zeros([2, 64, 64, 1], tf.uint8), tf.constant([0, 2]))
    assert 0.0 < loss < 10.0
