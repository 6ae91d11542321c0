"""Run under mpirun by tests/pipeline/test_train_inputs.py: does each rank draw its own dropout masks?

Each rank builds the training model as `hpml train` does, takes rank 0's weights, and runs one
training-mode forward pass on the same input. Weights must agree; dropout masks must not.
"""

import numpy as np

from hpml.core.config import load_config
from hpml.parallel import distributed
from hpml.train.compile import compile_model
from hpml.train.epoch_end import weights_digest

world = distributed.init()
cfg = load_config(None, ["model.backbone=tiny_cnn", "model.head=gap", "model.dropout=0.5", "data.image_size=16"])
model = compile_model(cfg, 1e-3, world)
model.optimizer.build(model.trainable_variables)
distributed.broadcast_weights(model)
x = np.full((8, 16, 16, 1), 100, np.uint8)
outputs = distributed.gather_objects(model(x, training=True).numpy(), "outputs")
weights = distributed.gather_objects(weights_digest(model), "weights")
if world.is_root:
    print("weights equal:", weights[0] == weights[1])
    print("dropout outputs equal:", bool(np.array_equal(outputs[0], outputs[1])))
