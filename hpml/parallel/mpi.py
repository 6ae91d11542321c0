"""MPI start-up for the stages that run on mpi4py (preprocessing), and launching `mpirun`.

Training starts MPI through Horovod instead (hpml.parallel.distributed); both bind the job's
`World` to the collective failure rule as soon as it is known.
"""

from __future__ import annotations

import os
from functools import lru_cache

from hpml.core import failure
from hpml.core.world import World


@lru_cache(maxsize=1)
def mpi_comm():  # -> mpi4py.MPI.Comm, imported lazily: MPI_Init is not free
    import mpi4py

    # Horovod may initialise in the same process later; it needs MPI_THREAD_MULTIPLE.
    mpi4py.rc.thread_level = "multiple"
    from mpi4py import MPI

    return MPI.COMM_WORLD


def mpi_world() -> World:
    comm = mpi_comm()
    local = comm.Split_type(_shared_type(), key=comm.Get_rank())
    world = World(comm.Get_rank(), comm.Get_size(), local.Get_rank())
    local.Free()
    failure.bind(world)
    return world


def mpirun_env() -> dict[str, str]:
    """Environment for launching `mpirun` children from hpml (demo, benchmarks)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    if os.geteuid() == 0:  # containers and CI run as root; Open MPI refuses without these
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")  # laptops: ranks > cores is fine
    return env


def _shared_type() -> int:
    from mpi4py import MPI

    return MPI.COMM_TYPE_SHARED
