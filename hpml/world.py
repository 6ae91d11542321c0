"""Who am I in the job: the one notion of rank used by every stage.

Preprocessing asks MPI (mpi4py); training asks Horovod (hpml.distributed), which builds the
same `World`. Rank never comes from environment variables: under `srun` the Open MPI ones are
absent, and the SLURM ones lie inside an allocation shared with other steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0


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
    from hpml import failure  # here, not at the top: failure imports this module

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
