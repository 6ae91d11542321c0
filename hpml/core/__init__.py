"""What every stage shares, with no TensorFlow or MPI in it (SLURM only as `squeue`, asked by exclusive).

    config      experiment YAML -> typed dataclasses, `--set` overrides, errors naming key and file
    errors      UsageError (exit 2, message only) and SourceError
    failure     the collective failure rule: any rank fails -> every rank stops, says why once
    faults      HPML_FAULT: make a chosen rank fail at a named phase (tests, drills)
    world       World: rank, size, local rank (the one notion of rank)
    logs        the rank on every log line; progress for a terminal or a SLURM log
    files       atomic writes and sha256 of files
    runfiles    the names of the files in a run directory (RunDir)
    jobid       which SLURM job and restart this process belongs to (from its environment)
    exclusive   lock files naming their holder, taken atomically, stale ones taken over without races
    metrics     COVID-Net's metrics from a confusion matrix
    best_epoch  train.monitor: which epoch is the best
    history     history.csv: its columns, read in one place
    provenance  one record per attempt of a stage (software, hardware, job, command), appended

Imports nothing else of hpml.
"""
