"""Progress of the whole MPI job, shown by rank 0.

Ranks work independently (no collective until the end), so counts travel point to point:
every rank sends its running count to rank 0 every `every` seconds with a non-blocking
send, and a final one when it is done. Rank 0 folds them in between its own images and,
once its own share is done, keeps receiving until every rank has reported done.
"""

from __future__ import annotations

import time

from hpml.core.logs import Progress
from hpml.core.world import World

TAG = 7301


class JobProgress:
    def __init__(self, comm, world: World, total: int, desc: str, every: float = 2.0):
        self.comm, self.world, self.every = comm, world, every
        self.counts = [0] * world.size
        self.done = [False] * world.size
        self._sent = time.monotonic()
        self._requests = []
        self.view = Progress(total, desc, world, every=30.0)

    def tick(self, n: int = 1) -> None:
        rank = self.world.rank
        self.counts[rank] += n
        if self.world.is_root:
            self._poll()
            self.view.set(sum(self.counts))
        elif time.monotonic() - self._sent >= self.every:
            self._send(done=False)

    def _send(self, done: bool) -> None:
        self._sent = time.monotonic()
        self._requests = [r for r in self._requests if not r.Test()]
        self._requests.append(self.comm.isend((self.counts[self.world.rank], done), dest=0, tag=TAG))

    def _poll(self) -> None:
        while self.comm.iprobe(tag=TAG):
            self._receive()

    def _receive(self) -> None:
        from mpi4py import MPI

        status = MPI.Status()
        count, done = self.comm.recv(source=MPI.ANY_SOURCE, tag=TAG, status=status)
        source = status.Get_source()
        self.counts[source] = max(self.counts[source], count)
        self.done[source] = self.done[source] or done

    def finish(self) -> None:
        """Every rank calls this after its share; rank 0 returns when all have reported."""
        if not self.world.is_root:
            self._send(done=True)
            for request in self._requests:
                request.wait()
            return
        self.done[0] = True
        while not all(self.done):
            self._receive()  # blocking: a dead rank makes mpirun/srun end the whole job
            self.view.set(sum(self.counts))
        self.view.close()
