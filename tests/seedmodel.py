"""The seed's model (Covid19-HPML XRAY/COVID-NET/model.py), built as the seed builds it, for tests."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

layers = tf.keras.layers


def seed_model(size: int) -> tf.keras.Model:
    """Covid19-HPML XRAY/COVID-NET/model.py:153-181 (resnet50v2, flatten, --datapipeline covidx), inline
    on ResNet50V2's output, with random weights instead of ImageNet's."""
    base = tf.keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(size, size, 3))
    x = layers.Flatten()(base.output)
    x = layers.Dense(1024, activation="relu", kernel_regularizer=tf.keras.regularizers.l2(0.0001))(x)
    x = layers.Dense(256, activation="relu", kernel_regularizer=tf.keras.regularizers.l2(0.0001))(x)
    predictions = layers.Dense(3, activation="softmax", name="FC_3")(x)
    return randomized(tf.keras.Model(inputs=base.input, outputs=predictions))


def multi_gpu_model(model: tf.keras.Model, gpus: int = 2) -> tf.keras.Model:
    """What keras.utils.multi_gpu_model returned (TF 1.x tensorflow/python/keras/utils/multi_gpu_utils.py):
    a Lambda slice of model.inputs per GPU, `model(slice)` (the template called as ONE nested layer),
    concatenate(outputs, axis=0, name=<the template's output name>), Model(model.inputs, merged).
    save_weights writes one hdf5 group per layer of that Model, so the template's weights all sit
    in one group, just as the seed's ModelCheckpoint on paramodel (train_keras.py:194) saved them."""

    def get_slice(data, i, parts):
        step = tf.shape(data)[:1] // parts
        return data[i * step[0] : (i + 1) * step[0]]

    slices = [layers.Lambda(get_slice, arguments={"i": i, "parts": gpus})(model.inputs[0]) for i in range(gpus)]
    merged = layers.Concatenate(axis=0, name=model.output_names[0])([model(s) for s in slices])
    return tf.keras.Model(model.inputs, merged)


def randomized(model: tf.keras.Model, seed: int = 0) -> tf.keras.Model:
    """Every tensor random (BatchNorm statistics and biases too), so a layer left out shows."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "kernel" in v.name:  # 1/sqrt(fan in), as Keras' init: activations stay in range through 50 layers
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(v.shape[:-1])), v.shape)
        elif "gamma" in v.name or "moving_variance" in v.name:
            value = rng.uniform(0.7, 1.3, v.shape)
        else:
            value = rng.normal(0.0, 0.1, v.shape)
        v.assign(value.astype(np.float32))
    return model
