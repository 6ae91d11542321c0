"""ReduceLROnPlateau, as Keras defines it, on state that survives a checkpoint.

Keras' callback keeps `best`, `wait` and `cooldown_counter` in the callback object, which a
resumed run would lose; here they live in the TrainState. The decision is Keras' own (tested
against tf.keras.callbacks.ReduceLROnPlateau): an epoch improves when the loss is below
`best - min_delta`; after `patience` epochs without improvement (outside cooldown) the LR is
multiplied by `factor`, not below `min_lr`, and `wait` restarts. HPML used factor 0.7,
patience 5, min_delta 1e-2, min_lr 1e-6 on the validation loss. The value watched is
`train.monitor` as a loss (hpml.train.selection.score: a higher-is-better metric negated), so
Keras' mode 'max' is the same rule.
"""

from __future__ import annotations

import numpy as np

from hpml.core.config import TrainConfig
from hpml.train.checkpoints import TrainState


def plateau_step(state: TrainState, value: float, lr: float, t: TrainConfig) -> tuple[float, bool]:
    """Update `state` with this epoch's monitored value (lower is better); returns (new LR, improved)."""
    if state.plateau_cooldown > 0:
        state.plateau_cooldown -= 1
        state.plateau_wait = 0
    improved = bool(np.less(value, state.plateau_best - t.plateau_min_delta))
    if improved:
        state.plateau_best = value
        state.plateau_wait = 0
        return lr, True
    if state.plateau_cooldown > 0 or t.plateau_patience == 0:
        return lr, False
    state.plateau_wait += 1
    if state.plateau_wait >= t.plateau_patience and lr > np.float32(t.plateau_min_lr):
        state.plateau_cooldown = t.plateau_cooldown
        state.plateau_wait = 0
        return max(lr * t.plateau_factor, t.plateau_min_lr), False
    return lr, False
