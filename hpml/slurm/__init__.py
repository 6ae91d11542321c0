"""Everything that talks to SLURM or reads what a job left behind; runs on a login node (no
TensorFlow, no Horovod).

    profiles      cluster profiles (configs/clusters/*.yaml), validated
    templates     where jobs/*.sbatch and the profiles are (checkout or installed package)
    render        a job script for a profile: one quoting rule for everything pasted in
    submit        write RUN/slurm/, sbatch, chain the stages
    query         scontrol, then sacct: what SLURM knows about a job
    sweep         a grid of overrides as one job array; sweep_report compares its points
    status        `hpml status`: SLURM's view next to the run directory's own
    usage         each rank's own usage record; efficiency turns them (and sacct) into a report

May import hpml.core.
"""
