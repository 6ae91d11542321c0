"""Where this rank runs: its CPUs, its thread settings, its node-local scratch.

Each rank logs one line at start so a SLURM log shows at a glance whether the launch line
gave it the cores the job asked for (srun in SLURM 22.05-23.02 does not inherit
`--cpus-per-task`: without it every rank is bound to one core and tf.data starves).
"""

from __future__ import annotations

import os
import socket

from hpml.core.config import ConfigError

THREAD_VARS = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def cpu_list(cpus: set[int]) -> str:
    """{0, 1, 2, 5} -> '0-2,5'."""
    out, run = [], []
    for c in sorted(cpus):
        if run and c != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(c)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def report() -> str:
    """One line: host, CPUs this process may run on, what SLURM granted, thread settings."""
    cpus = os.sched_getaffinity(0)
    threads = " ".join(f"{v}={os.environ[v]}" for v in THREAD_VARS if v in os.environ) or "thread settings: TF defaults"
    granted = os.environ.get("SLURM_CPUS_PER_TASK", "-")
    return f"placement: {socket.gethostname()} cpus={len(cpus)} [{cpu_list(cpus)}] cpus_per_task={granted} {threads}"


def expand_stage_dir(value: str | None) -> str | None:
    """`$TMPDIR`-style staging paths are expanded by each rank, on its own node.

    The job script passes them unexpanded: node-local scratch can differ from node to node,
    and the batch shell only knows its own.
    """
    if not value:
        return value
    expanded = os.path.expanduser(os.path.expandvars(value))
    if "$" in expanded:
        raise ConfigError(
            f"data.stage_dir: {value!r}: a variable in it is not set on {socket.gethostname()} "
            "(on Snellius $TMPDIR is node-local only with --constraint=scratch-node: set `constraint` in the profile)"
        )
    return expanded
