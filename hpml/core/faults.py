"""Fault injection: make a chosen rank fail at a named phase, on purpose, for tests and drills.

    HPML_FAULT="PHASE[@N]:RANK:KIND[,PHASE[@N]:RANK:KIND...]"

PHASE is a name passed to `hpml.core.failure.phase()` (listed in docs/architecture.md), `@N` fires
on the N-th time that phase is entered on that rank (default: the first), RANK is a rank number
or `*`. KIND is what happens:
  raise   a RuntimeError ("injected fault ...")     enospc  OSError ENOSPC (disk full)
  kill    SIGKILL to this process                   eio     OSError EIO (I/O error)
  usr1    SIGUSR1 to this process (a preemption warning, delivered at an exact step)
Unset, it costs one dict lookup per phase entry.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass
from functools import lru_cache

ENV = "HPML_FAULT"
KINDS = ("raise", "kill", "usr1", "enospc", "eio")


class InjectedFault(RuntimeError):
    """Raised by `raise` faults; an ordinary exception as far as the code under test knows."""


@dataclass(frozen=True)
class Fault:
    phase: str
    count: int  # fire on the count-th entry of the phase
    rank: int | None  # None: every rank
    kind: str


def parse(text: str) -> list[Fault]:
    faults = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            where, rank, kind = item.split(":")
            phase, _, count = where.partition("@")
            fault = Fault(phase, int(count or 1), None if rank == "*" else int(rank), kind)
        except ValueError:
            raise ValueError(f"{ENV}={text!r}: expected PHASE[@N]:RANK:KIND, got {item!r}") from None
        if kind not in KINDS:
            raise ValueError(f"{ENV}={text!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        faults.append(fault)
    return faults


@lru_cache(maxsize=1)
def _configured(text: str) -> tuple[Fault, ...]:
    return tuple(parse(text))


_entries: dict[str, int] = {}


def reached(phase: str, rank: int) -> None:
    """Count an entry into `phase` on `rank`; fire a configured fault that matches it."""
    text = os.environ.get(ENV)
    if not text:
        return
    _entries[phase] = _entries.get(phase, 0) + 1
    for fault in _configured(text):
        if fault.phase == phase and fault.count == _entries[phase] and fault.rank in (None, rank):
            _fire(fault, rank)


def _fire(fault: Fault, rank: int) -> None:
    what = f"injected fault: {fault.kind} at phase {fault.phase!r} (entry {fault.count}) on rank {rank}"
    if fault.kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault.kind == "usr1":
        os.kill(os.getpid(), signal.SIGUSR1)
        return
    if fault.kind == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device ({what})")
    if fault.kind == "eio":
        raise OSError(errno.EIO, f"Input/output error ({what})")
    raise InjectedFault(what)
