"""The compiled Keras model every rank trains: optimizer, Horovod's wrapper, loss, XLA.

`hpml train`, `hpml bench loop` and `hpml bench scaling --measure` build their models here,
so a benchmark times exactly what training runs.
"""

from __future__ import annotations

from dataclasses import replace

import tensorflow as tf

from hpml.core.config import Config
from hpml.core.world import World
from hpml.models.build import build_model
from hpml.parallel import distributed


def keras_optimizer(cfg: Config, lr: float) -> tf.keras.optimizers.Optimizer:
    """The seed's Adam (amsgrad) or SGD with Nesterov momentum, before Horovod wraps it."""
    if cfg.train.optimizer == "adam":
        return tf.keras.optimizers.Adam(lr, amsgrad=cfg.train.amsgrad)
    return tf.keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)


def compile_model(cfg: Config, lr: float, world: World) -> tf.keras.Model:
    if cfg.train.mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    # A seed per rank: Dropout layers take their seeds at construction, and identical masks on
    # every rank would waste the regularisation. The weights are rank 0's (broadcast on resume).
    tf.keras.utils.set_random_seed(cfg.train.seed + 1_000_003 * world.rank)
    # A run that starts from a whole-model file (init_from) does not need the backbone's own file.
    model_cfg = replace(cfg.model, weights=None) if cfg.model.init_from else cfg.model
    model = build_model(model_cfg, cfg.data.image_size)
    t = cfg.train
    optimizer = distributed.distributed_optimizer(keras_optimizer(cfg, lr), t.compression, t.accumulate_steps)
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=distributed.whole_step_xla(t.jit_compile),
    )
    return model
