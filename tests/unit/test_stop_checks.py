"""When the ranks check for a stop, and that the training callbacks never wait for the device."""

import tempfile
from pathlib import Path

USR1_BIT = 1 << (10 - 1)  # SIGUSR1 = 10; /proc/PID/status SigCgt is a mask of caught signals


def test_check_interval_keeps_the_checks_under_budget_and_within_the_time_bound():
    from hpml.train.preemption import CHECK_BUDGET, MAX_CHECK_INTERVAL_S, check_every

    # A 20 ms GPU step and a 3 ms check: every 30 steps is 3 ms per 600 ms = 0.5 %.
    assert check_every(0.020, 0.003, 1) == 30
    assert check_every(0.020, 0.003, 4) == 32  # whole optimizer updates only
    for step_s, check_s, unit in [(0.02, 0.003, 1), (0.005, 0.002, 2), (0.3, 0.001, 1), (1.0, 0.0001, 3)]:
        k = check_every(step_s, check_s, unit)
        assert k % unit == 0 and check_s / (k * step_s) <= CHECK_BUDGET
    # Slow steps, a slow check: the time bound wins (a stop must come well within SLURM's warning).
    assert check_every(10.0, 1.0, 1) * 10.0 <= MAX_CHECK_INTERVAL_S


def test_the_training_callbacks_never_force_a_host_sync_per_step():
    import tensorflow as tf

    from hpml.core.world import World
    from hpml.train.callbacks import StepProgress, Warmup, training_callbacks
    from hpml.train.checkpoints import TrainState
    from hpml.train.preemption import Preemption
    from hpml.train.status_writer import StatusWriter

    status = StatusWriter(Path(tempfile.mkdtemp()), World(), TrainState(), 1, 10, 8)
    callbacks = training_callbacks(Preemption(), Warmup(1e-3, 2e-3, 10, 0), StepProgress(World()), [status.callback()])
    listed = tf.keras.callbacks.CallbackList(callbacks)
    # Keras converts a step's logs to numpy (waiting for the device) unless every callback with
    # batch hooks takes tensors.
    assert listed._batch_hooks_support_tf_logs, [type(c).__name__ for c in callbacks]
