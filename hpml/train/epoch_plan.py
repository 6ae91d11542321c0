"""Which train records each rank reads in each epoch: exact, balanced, and known before reading.

Per epoch the train shards are put in a seeded order, the same on every rank. A *stream* is a
set of classes: all of them, or, with COVID-Net's `covid_percent`, the non-COVID classes and
COVID-19 apart. A stream's records, in that shard order, are cut into `size` contiguous parts of
equal size (+-1); rank r reads part r as spans (file, first record, end) and keeps the stream's
classes. So in every epoch each record of a stream is read by exactly one rank, ranks hold the
same number of records whatever files they get, and the order changes every epoch. The counts
come from the manifest's per-record labels: steps per epoch, and a rank that cannot be fed,
are known on every rank before anything is read.

The epoch is one pass over the driving stream (all records; with `covid_percent` the non-COVID
ones, each batch topped up with COVID-19 images as COVID-Net does, the COVID stream repeating),
or, with `train.epoch_length: covidnet`, COVID-Net's generator length: ceil(driving records /
global batch) steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hpml.core.config import CLASSES, TrainConfig
from hpml.core.errors import UsageError
from hpml.core.world import World

COVID = CLASSES.index("COVID-19")


class TrainDataError(UsageError, ValueError):
    """The train split cannot feed this job (too small, a class missing for a rank...)."""


@dataclass(frozen=True)
class Span:
    file: str
    start: int  # first record index in the file
    stop: int  # one past the last record index


@dataclass(frozen=True)
class Stream:
    classes: frozenset[int]  # class indices this stream keeps
    per_batch: int  # records of this stream in every batch (the least, with `rotating`)
    spans: tuple[Span, ...]  # this rank's part, in reading order
    count: int  # records of the stream in this rank's part
    total: int  # records of the stream in the whole split
    drives_epoch: bool  # the epoch is one pass over this stream
    rotating: int = 0  # ranks with one more COVID-19 image at each step (a global share that does not divide)

    def share(self, rank: int, size: int, step: int) -> int:
        """This stream's records in `rank`'s batch at `step`: the extra images go round the ranks."""
        extra = 1 if (rank + step) % size < self.rotating else 0
        return self.per_batch + (extra if not self.drives_epoch else -extra)


def covid_per_batch(batch_size: int, covid_percent: float) -> int:
    """COVID-Net's BalanceCovidDataset: max(int(batch * covid_percent), 1) COVID-19 images."""
    return max(int(batch_size * covid_percent), 1)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


@dataclass(frozen=True)
class Group:
    classes: frozenset[int]
    per_batch: int  # the most records per batch for the driving stream, the least for COVID-19
    drives_epoch: bool
    total: int  # records of these classes in the train split
    rotating: int = 0


class TrainPlan:
    """Built identically on every rank from the manifest's shard entries (file, labels)."""

    def __init__(self, shards: list[tuple[str, str]], t: TrainConfig, world: World) -> None:
        self.shards = sorted(shards)  # (file, labels: one class digit per record)
        self.world, self.seed = world, t.seed
        self.groups = [
            Group(keep, per_batch, drives, self._count(keep), rotating)
            for keep, per_batch, drives, rotating in _groups(t, world.size)
        ]
        self._check(t)
        natural = min((g.total // world.size) // g.per_batch for g in self.groups if g.drives_epoch)
        # Whole optimizer updates only: an epoch (and its checkpoint) never ends with gradients
        # waiting in Horovod's accumulator. config.py checks a fixed steps_per_epoch the same way.
        self.natural_steps = natural - natural % t.accumulate_steps
        if self.natural_steps == 0:
            raise TrainDataError(
                f"an epoch of the train split is {natural} step(s) per rank, fewer than train.accumulate_steps "
                f"({t.accumulate_steps}): lower accumulate_steps, the batch size or the rank count"
            )
        self.steps = t.steps_per_epoch or self._length(t)  # the same on every rank

    def _length(self, t: TrainConfig) -> int:
        if t.epoch_length == "pass":
            return self.natural_steps
        # BalanceCovidDataset.__len__: ceil(non-COVID files / batch size), over the global batch here;
        # a stream that runs out wraps around (reshuffled), as the generator's did.
        driving = sum(g.total for g in self.groups if g.drives_epoch)
        steps = -(-driving // (t.batch_size * self.world.size))
        return max(steps - steps % t.accumulate_steps, t.accumulate_steps)

    def _count(self, keep: frozenset[int]) -> int:
        return sum(labels.count(str(c)) for _, labels in self.shards for c in keep)

    def _check(self, t: TrainConfig) -> None:
        size = self.world.size
        if not self.shards or sum(g.total for g in self.groups) == 0:
            raise TrainDataError("the train split has no records (did `hpml preprocess` write train shards?)")
        for g in self.groups:
            names = "/".join(CLASSES[c] for c in sorted(g.classes))
            if g.drives_epoch and g.per_batch - (1 if g.rotating else 0) < 1:
                raise TrainDataError(
                    f"train.batch_size {t.batch_size} with train.covid_percent {t.covid_percent}: every image of a "
                    "batch would be COVID-19; raise the batch size or lower covid_percent"
                )
            if g.total // size < (g.per_batch if g.drives_epoch else 1):
                need = f"{g.per_batch} per batch" if g.drives_epoch else "at least one"
                raise TrainDataError(
                    f"the train split has {g.total} {names} record(s) for {size} rank(s): every rank needs {need} "
                    f"(train.batch_size {t.batch_size}, train.covid_percent {t.covid_percent}); use fewer ranks, a "
                    "smaller batch, or train.covid_percent: null"
                )

    def shard_order(self, epoch: int) -> list[tuple[str, str]]:
        order = list(self.shards)
        random.Random(epoch_seed(self.seed, epoch)).shuffle(order)  # the same on every rank
        return order

    def streams(self, epoch: int) -> list[Stream]:
        order = self.shard_order(epoch)
        out = []
        for g in self.groups:
            spans, count = rank_part(order, g.classes, g.total, self.world)
            out.append(Stream(g.classes, g.per_batch, tuple(spans), count, g.total, g.drives_epoch, g.rotating))
        return out


def _groups(t: TrainConfig, size: int) -> list[tuple[frozenset[int], int, bool, int]]:
    """(classes, records per batch, drives the epoch, rotating ranks) for each stream.

    With train.global_batch the COVID-19 share is the global batch's, k = max(int(G * p), 1):
    every rank gets k // size per batch, and the k % size left over go round the ranks step by
    step, so every global batch holds exactly k (the seed's one in 8 on 4 GPUs: 2 per GPU, one
    of which holds the COVID-19 image).
    """
    every = frozenset(range(len(CLASSES)))
    if t.covid_percent is None:
        return [(every, t.batch_size, True, 0)]
    if t.global_batch is None:
        k = covid_per_batch(t.batch_size, t.covid_percent)
        return [(every - {COVID}, t.batch_size - k, True, 0), (frozenset({COVID}), k, False, 0)]
    k, rotating = divmod(covid_per_batch(t.global_batch, t.covid_percent), size)
    return [(every - {COVID}, t.batch_size - k, True, rotating), (frozenset({COVID}), k, False, rotating)]


def rank_part(order: list[tuple[str, str]], keep: frozenset[int], total: int, world: World) -> tuple[list[Span], int]:
    """This rank's contiguous part of the `keep` records of `order`, as spans of record indices."""
    lo, hi = world.rank * total // world.size, (world.rank + 1) * total // world.size
    digits = {str(c) for c in keep}
    spans, seen = [], 0
    for file, labels in order:
        positions = [i for i, ch in enumerate(labels) if ch in digits]
        first, last = max(lo - seen, 0), min(hi - seen, len(positions))
        if first < last:
            spans.append(Span(file, positions[first], positions[last - 1] + 1))
        seen += len(positions)
        if seen >= hi:
            break
    return spans, hi - lo
