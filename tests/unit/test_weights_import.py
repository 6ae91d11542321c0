"""hpml.models.weights_import: the seed's hdf5 (plain and multi_gpu_model), hpml's .h5 and checkpoints."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tensorflow as tf
from seedmodel import multi_gpu_model, randomized, seed_model

from hpml.core.config import ModelConfig
from hpml.core.errors import UsageError
from hpml.models.build import build_model
from hpml.models.weights_import import WeightsImportError, import_weights, save_weights_file

layers = tf.keras.layers
SIZE = 32  # the smallest ResNet50V2 takes
TOL = 1e-5  # observed max |p_seed - p_hpml| 1.8e-7 (float32 rounding: x / 255 vs x * (1 / 255))


def hpml_model(head: str = "flatten") -> tf.keras.Model:
    # The seed fed ResNet50V2 pixels in [0, 1] (train_keras.py:222-224, cv2.imread / 255).
    return build_model(ModelConfig(backbone="resnet50v2", head=head, input_scale="unit"), SIZE)


def gray_images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, SIZE, SIZE, 1), dtype=np.uint8)


def probabilities(seed: tf.keras.Model, model: tf.keras.Model) -> tuple[np.ndarray, np.ndarray]:
    gray = gray_images()
    rgb = np.repeat(gray, 3, axis=-1).astype(np.float32) / 255.0  # a gray BGR image, as cv2 reads it
    return seed(rgb, training=False).numpy(), model(gray, training=False).numpy()


@pytest.fixture(scope="module")
def seed() -> tf.keras.Model:
    return seed_model(SIZE)


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "multi_gpu_model"])
def test_seed_file_gives_the_seed_probabilities(seed, wrapped, tmp_path):
    path = tmp_path / "cp-07-0.31.hdf5"
    (multi_gpu_model(seed) if wrapped else seed).save_weights(str(path))  # ModelCheckpoint(save_weights_only)
    with h5py.File(path) as f:
        names = [n for n in f.attrs["layer_names"] if f[n].attrs["weight_names"].size]
    # plain: one group per layer; multi_gpu_model: the template is one group holding all its weights
    assert names == [seed.name] if wrapped else len(names) == 105

    model = hpml_model()
    expected, before = probabilities(seed, model)
    assert np.abs(expected - before).max() > 100 * TOL  # not equal by chance
    report = import_weights(path, model)
    assert report.counts == {"mapped": 105, "mismatched": 0, "unfilled": 0, "unused": 0}
    text = str(report)
    fc1, fc2 = (layer.name for layer in seed.layers[-3:-1])  # auto-named: dense, dense_1 in a fresh session
    assert f"{fc1} -> head_fc1" in text and f"{fc2} -> head_fc2" in text and "FC_3 -> head_out" in text
    assert ("nested" in report.layout) == wrapped
    seed_probs, hpml_probs = probabilities(seed, model)
    np.testing.assert_allclose(hpml_probs, seed_probs, rtol=0, atol=TOL)


def test_hpml_h5_and_checkpoint_give_identical_weights(tmp_path):
    trained = randomized(hpml_model(), seed=2)
    save_weights_file(trained, tmp_path / "best.h5")
    optimizer = tf.keras.optimizers.Adam()
    optimizer.build(trained.trainable_variables)  # as hpml.train.checkpoints.tracker: slots saved too
    tf.train.Checkpoint(model=trained, optimizer=optimizer).write(str(tmp_path / "checkpoints" / "ckpt-12"))
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["best.h5"]  # no temp file left

    for source in (tmp_path / "best.h5", tmp_path / "checkpoints" / "ckpt-12"):
        fresh = hpml_model()
        report = import_weights(source, fresh)
        assert report.counts == {"mapped": 105, "mismatched": 0, "unfilled": 0, "unused": 0}, str(report)
        for want, got in zip(trained.weights, fresh.weights, strict=True):
            np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=f"{source.name}: {want.name}")


def test_other_head_is_refused_then_loaded_partially(seed, tmp_path):
    path = tmp_path / "seed.hdf5"
    seed.save_weights(str(path))
    model = hpml_model(head="gap")
    before = [v.numpy() for v in model.weights]
    head_out = model.get_layer("head_out").kernel.numpy()
    with pytest.raises(WeightsImportError) as refused:
        import_weights(path, model)
    message = str(refused.value)
    assert isinstance(refused.value, UsageError) and str(path) in message
    assert "FC_3 -> head_out: kernel is 256x3 in the file, 2048x3 in the model" in message
    for v, old in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(v.numpy(), old)  # refused: nothing written

    report = import_weights(path, model, allow_partial=True)
    assert report.counts == {"mapped": 102, "mismatched": 1, "unfilled": 0, "unused": 2}
    assert report.unused == [layer.name for layer in seed.layers[-3:-1]] and "MISMATCH  FC_3 -> head_out" in str(report)
    conv1 = model.get_layer("backbone_resnet50v2").get_layer("conv1_conv").kernel
    np.testing.assert_array_equal(conv1.numpy(), seed.get_layer("conv1_conv").kernel.numpy())
    np.testing.assert_array_equal(model.get_layer("head_out").kernel.numpy(), head_out)


def test_files_that_are_not_weights_are_named(tmp_path):
    model = build_model(ModelConfig(backbone="tiny_cnn", head="gap"), SIZE)
    text = tmp_path / "notes.txt"
    text.write_text("not weights\n")
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    for path, why in [
        (text, "is not an HDF5 file"),
        (empty, "without Keras weights"),
        (tmp_path / "missing.h5", "does not exist"),
    ]:
        with pytest.raises(WeightsImportError, match=why) as err:
            import_weights(path, model)
        assert str(path) in str(err.value)
