"""Where hpml follows a definition made elsewhere, checked against that definition."""

import numpy as np
import pytest
import tensorflow as tf

from hpml.core.config import ModelConfig, load_config
from hpml.models.build import build_model
from hpml.models.heads import head
from hpml.train.checkpoints import TrainState
from hpml.train.plateau import plateau_step

HPML = {"factor": 0.7, "patience": 5, "min_delta": 1e-2, "min_lr": 1e-6, "cooldown": 0}  # train_keras.py
OTHER = {"factor": 0.5, "patience": 2, "min_delta": 0.05, "min_lr": 1e-3, "cooldown": 1}


def keras_lrs(losses, params, lr):
    """The learning rates tf.keras' own ReduceLROnPlateau sets, epoch by epoch."""
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(1,))])
    model.compile(tf.keras.optimizers.SGD(lr), "mse")
    callback = tf.keras.callbacks.ReduceLROnPlateau(monitor="val_loss", **params)
    callback.set_model(model)
    callback.on_train_begin()
    out = []
    for epoch, loss in enumerate(losses):
        callback.on_epoch_end(epoch, {"val_loss": loss})
        out.append(float(model.optimizer.learning_rate.numpy()))
    return out


def hpml_lrs(losses, params, lr):
    t = load_config(None, [f"train.plateau_{k}={v}" for k, v in params.items()]).train
    state, out = TrainState(), []
    for loss in losses:
        lr, _ = plateau_step(state, loss, lr, t)
        out.append(float(np.float32(lr)))
    return out


@pytest.mark.parametrize("params", [HPML, OTHER], ids=["hpml", "other"])
@pytest.mark.parametrize("seed", range(6))
def test_reduce_lr_on_plateau_decides_as_keras(params, seed):
    rng = np.random.default_rng(seed)
    # Slow drifts with small improvements (below min_delta), plateaus and repeats: where the
    # min_delta and `best` rules matter.
    losses = list(np.round(1.0 + np.cumsum(rng.normal(-0.004, 0.02, 40)), 4))
    losses[10:14] = [losses[9]] * 4
    assert hpml_lrs(losses, params, 2e-3) == pytest.approx(keras_lrs(losses, params, 2e-3), rel=1e-6)


def test_efficientnet_local_imagenet_weights_normalise_as_imagenet(tmp_path):
    # A notop file as Keras publishes it: the ImageNet stddev sits in the Normalization layer's
    # variance slot (keras.applications.efficientnet, TensorFlow issue 49930).
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    published = tf.keras.applications.EfficientNetB4(include_top=False, weights=None, input_shape=(32, 32, 3))
    norm = next(layer for layer in published.layers if isinstance(layer, tf.keras.layers.Normalization))
    norm.set_weights([mean, std, np.array(0)])
    published.save_weights(str(tmp_path / "efficientnetb4_notop.h5"))
    model = build_model(
        ModelConfig(backbone="efficientnetb4", head="gap", weights=str(tmp_path / "efficientnetb4_notop.h5")), 32
    )
    backbone = model.get_layer("backbone_efficientnetb4")
    ours = next(layer for layer in backbone.layers if isinstance(layer, tf.keras.layers.Normalization))
    probe = tf.keras.Model(backbone.input, ours.output)
    gray = 0.6  # what model_input makes of a uint8 153 pixel
    got = probe(np.full((1, 32, 32, 3), gray, np.float32)).numpy()[0, 0, 0]
    np.testing.assert_allclose(got, (gray - mean) / std, rtol=1e-4)  # torchvision's ImageNet normalisation


def test_covidnext_head_has_covid_next_parameter_count():
    features = tf.keras.Input((16, 16, 2048))
    model = tf.keras.Model(features, head(features, "covidnext", 0.0))
    convs = 2048 * 512 * 9 + 512 * 1024 * 1 + 1024 * 512 * 9  # bias-free convs (ConvBn2d)
    batchnorm = 4 * (512 + 1024 + 512)  # gamma, beta, running mean, running var
    assert model.count_params() == convs + batchnorm + (512 * 3 + 3)
    assert sum(isinstance(layer, tf.keras.layers.LeakyReLU) for layer in model.layers) == 3
