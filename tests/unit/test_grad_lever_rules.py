"""The LR and epoch rules of gradient accumulation, and the config refusing epochs that end inside an update."""

import pytest

from hpml.core.config import ConfigError, load_config
from hpml.core.world import World
from hpml.parallel import distributed
from hpml.train.epoch_plan import TrainDataError, TrainPlan


def test_global_batch_and_lr_rule_count_accumulated_micro_batches():
    assert distributed.global_batch(8, 4, 3) == 96
    assert distributed.scaled_lr(1e-4, 8, 8, 4, "linear", accumulate_steps=3) == pytest.approx(1.2e-3)
    assert distributed.scaled_lr(1e-4, 8, 8, 4, "sqrt", accumulate_steps=4) == pytest.approx(4e-4)
    assert distributed.scaled_lr(1e-4, 8, 8, 4, "none", accumulate_steps=4) == 1e-4
    # 1000 images on 4 ranks: 250 each, 31 whole batches of 8 -> 30 steps, whole updates of 3
    train = load_config(None, ["train.batch_size=8", "train.covid_percent=null", "train.accumulate_steps=3"]).train
    assert TrainPlan([("a.tfrecord", "012" * 333 + "0")], train, World(0, 4)).steps == 30
    train.accumulate_steps = 1
    assert TrainPlan([("a.tfrecord", "012" * 333 + "0")], train, World(0, 4)).steps == 31
    train.accumulate_steps = 40
    with pytest.raises(TrainDataError, match="fewer than train.accumulate_steps"):
        TrainPlan([("a.tfrecord", "012" * 333 + "0")], train, World(0, 4))


def test_config_rejects_epochs_that_end_inside_an_update():
    cfg = load_config(None, ["train.compression=fp16", "train.accumulate_steps=4", "train.jit_compile=true"])
    assert (cfg.train.compression, cfg.train.accumulate_steps, cfg.train.jit_compile) == ("fp16", 4, True)
    with pytest.raises(ConfigError, match="steps_per_epoch.*not a multiple of train.accumulate_steps"):
        load_config(None, ["train.accumulate_steps=4", "train.steps_per_epoch=10"])
    with pytest.raises(ConfigError, match="train.compression"):
        load_config(None, ["train.compression=int8"])
