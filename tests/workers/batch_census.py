"""One rank's census of the batches `hpml train` would feed it (run under mpirun).

Usage: batch_census.py CONFIG SHARDS OUT EPOCHS [SECTION.KEY=VALUE ...]

Each rank builds the training's own epoch plan and input pipeline (hpml.train.data.train_dataset,
what Keras' fit consumes) and writes, per epoch, the labels and record ids of every batch it
gets to OUT/rank<r>.json. Augmentation must be off: record ids are read from the pixels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shardmaker import image_id

from hpml.core.config import for_world, load_config
from hpml.parallel import distributed
from hpml.shards.shardset import ShardSet
from hpml.train.data import train_dataset, train_shard_labels
from hpml.train.epoch_plan import TrainPlan


def main() -> None:
    config, shards, out, epochs, *overrides = sys.argv[1:]
    world = distributed.init()
    cfg = for_world(load_config(config, overrides), world.size)  # as hpml.train.loop.train does
    shard_set = ShardSet.open(shards)
    plan = TrainPlan(train_shard_labels(shard_set), cfg.train, world)
    census = {"rank": world.rank, "size": world.size, "steps": plan.steps, "epochs": []}
    for epoch in range(int(epochs)):
        batches = []
        for images, labels in train_dataset(plan, cfg, epoch, 0):
            batches.append({"labels": labels.numpy().tolist(), "ids": [image_id(img) for img in images.numpy()]})
        census["epochs"].append(batches)
    Path(out, f"rank{world.rank}.json").write_text(json.dumps(census))


if __name__ == "__main__":
    main()
