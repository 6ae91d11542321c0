"""hpml: COVID-Net-style chest X-ray classification, preprocessed with MPI, trained with Horovod
on SLURM clusters (and on a laptop, with the same commands).

One subpackage per concern, in layers; each imports only from earlier layers, and parallel, imaging,
models, shards and slurm (one layer) not from each other (tests/unit/test_layers.py keeps it so;
docs/architecture.md draws the tree):

    core        config, errors, the collective failure rule, fault injection, World, logs,
                atomic files, the names of a run directory's files, the SLURM job id
    parallel    MPI start-up, the one Horovod module, CPU/GPU placement
    imaging     the pixel policy every stage shares (decode, crop, resize)
    models      backbones, heads, the model
    shards      the shard contract: record schema, manifest, ShardSet, verification
    slurm       cluster profiles, job scripts, submit, query, sweeps, status, usage, efficiency
    (preprocess, the top-level package: COVIDx building, the synthetic corpus, shard writing)
    train       the training loop and everything it decides
    evaluation  exact metrics, intervals, curves, calibration, comparison, reports
    serve       predict, Grad-CAM, export, model card
    bench       every benchmark, the communication model, the 2-node network emulator
    cli         the `hpml` command; nothing imports it
"""

__version__ = "0.1.0"
