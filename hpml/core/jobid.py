"""Which SLURM job (or array task) and which restart of it this process belongs to.

Read from the job's environment, never from SLURM's commands: ranks write these words into
RUN/PREEMPTED, RUN/status.json and their usage records, and `jobs/hpml-env.sh` builds the same
words in bash (`hpml_self_id`; a test pins the two together).
"""

from __future__ import annotations

import os


def job_identity(environ: dict[str, str] | None = None) -> str:
    """`job=<id> restart=<n>`: the same words the job script builds (jobs/hpml-env.sh).

    An array task is named `<array job id>_<task id>`, as scontrol and scancel need it: a bare
    array job id would name every task of the array.
    """
    env = os.environ if environ is None else environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    else:
        job = env.get("SLURM_JOB_ID") or "none"
    return f"job={job} restart={env.get('SLURM_RESTART_COUNT') or 0}"
