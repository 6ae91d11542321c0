"""Every `hpml bench`, the communication model and the 2-node network emulator.

    rounds            measure in rounds until each ratio's 95 % interval judges its target
    preprocess        the MPI stage against a bare OpenCV loop
    input_pipeline    the tf.data pipeline against the seed's loader and a bare decode
    train_loop        hpml train's loop against a bare Horovod `fit`
    scaling           parameters, FLOPs, gradient bytes, predicted scaling on N GPUs
    comm_model        how long Horovod's allreduce takes, and how much of it a step waits for
    netsim            two "nodes" of network namespaces joined by a shaped veth link
    scaling_measure   the model against real steps on that network; scaling_worker is one rank

A leaf: may import everything but hpml.cli; only hpml.cli imports it.
"""
