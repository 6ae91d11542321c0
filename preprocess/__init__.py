"""The offline stage: COVIDx split building, the synthetic corpus, and MPI shard writing.

    covidx/      `hpml covidx build|import`: sources (one reader per upstream layout), label
                 policies, near-duplicates, patient-level splits, published test lists
    synth/       `hpml synth`: a generated raw corpus in the five source layouts
    splitfile    the split-file contract (`patientid filename label source`), read and written
    run          `hpml preprocess`: split files -> shards + manifest on N MPI ranks, with
                 plan (who does what), shard_writer, manifest, job_progress

May import hpml.core, parallel, imaging, models, shards, slurm; never hpml.train or later.
"""
