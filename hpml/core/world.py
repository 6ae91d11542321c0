"""Who am I in the job: the one notion of rank used by every stage.

Preprocessing asks MPI (hpml.parallel.mpi); training asks Horovod (hpml.parallel.distributed);
both build this same `World`. Rank never comes from environment variables: under `srun` the Open MPI ones are
absent, and the SLURM ones lie inside an allocation shared with other steps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0
