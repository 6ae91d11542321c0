"""Logging with the rank on every line, and progress that suits a terminal or a SLURM log.

Only rank 0 shows progress. On a terminal that is a tqdm bar; otherwise (a batch job writing
to slurm-%j.out) a plain line every `every` seconds, so logs stay readable and greppable.
"""

from __future__ import annotations

import logging
import sys
import time

from hpml.core.world import World

_FORMAT = "%(asctime)s [{rank}/{size}] %(levelname)s %(name)s: %(message)s"


def setup_logging(world: World = World(), level: int | str = logging.INFO) -> None:
    """Route the `hpml` loggers to stderr, each line stamped with time, rank/size and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT.format(rank=world.rank, size=world.size), "%Y-%m-%d %H:%M:%S"))
    for name in ("hpml", "preprocess"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False


class Progress:
    """Counts work done; renders on rank 0 only. Use as a context manager."""

    def __init__(
        self, total: int, desc: str, world: World = World(), unit: str = "img", every: float = 30.0, stream=None
    ) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done = 0
        self.stream = stream or sys.stderr
        self._start = self._last = time.monotonic()
        self._bar = None
        self._active = world.is_root
        if self._active and self.stream.isatty() and sys.stdout.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream)

    def update(self, n: int = 1) -> None:
        self.done += n
        self.set(self.done)

    def set(self, done: int) -> None:
        """Set the absolute count (e.g. a sum gathered from all ranks)."""
        if not self._active:
            self.done = done
            return
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
        elif time.monotonic() - self._last >= self.every:
            self._line(done)
        self.done = done

    def _line(self, done: int) -> None:
        self._last = time.monotonic()
        elapsed = max(self._last - self._start, 1e-9)
        pct = 100.0 * done / self.total if self.total else 100.0
        print(
            f"{self.desc}: {done}/{self.total} {self.unit} ({pct:.0f}%), "
            f"{done / elapsed:.1f} {self.unit}/s, {elapsed:.0f}s elapsed",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if not self._active:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._line(self.done)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
