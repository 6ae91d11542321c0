"""`hpml train`: Horovod data-parallel Keras training from the shards, and every decision in it.

    loop            start-up, the epochs, the checkpoints: read this first
    compile         optimizer, Horovod's wrapper, loss, XLA
    epoch_plan      which records each rank reads in each epoch (exact, balanced, known ahead)
    data            tf.data from the shards: the training and evaluation streams
    augment         stateless augmentation (replays exactly on resume)
    staging         the shards copied to node-local scratch, verified
    shard_check     damaged shards found before the first step, or named when TensorFlow trips
    epoch_end       validation over all ranks, history.csv, TensorBoard
    selection       best.h5 (+ best.json) and the per-epoch weights files (train.keep_checkpoints)
    hparams         the run's TensorBoard HParams session (a sweep point: its grid values)
    tracking        train.tracker: mlflow, one MLflow file-store run across requeues
    plateau         ReduceLROnPlateau on state that survives a checkpoint
    checkpoints     full training state on disk
    resume          where a run starts: rank 0 reads, every rank gets the same state, rescaled
    preemption      SLURM's warning signal -> every rank stops at the same step -> requeue
    callbacks       the Keras callbacks of the loop
    run_lock        one training per run directory
    provenance      RUN/versions.json
    status_writer   RUN/status.json, written by rank 0 as it trains

May import hpml.core, parallel, imaging, models, shards, slurm (a sweep's points), preprocess.
"""
