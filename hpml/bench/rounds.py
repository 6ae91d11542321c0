"""Repeat a benchmark until its ratios can be judged against their targets, or time runs out.

On a noisy 2-core machine one round of "ours vs the baseline" can read 0.80 or 1.42 for the
same code. So every `hpml bench` measures in rounds, each round giving every ratio once (both
sides measured back to back, so drift hits both), and stops when, for every ratio, the 95 %
interval over the rounds lies wholly above or below its target, or is narrower than
`precision` around the ratio (then the ratio *is* the target, within that precision); or
when `max_rounds` or `time_limit_s` is reached, and then it says the question stays open.

The interval is Student's t on the logarithms of the per-round ratios (ratios multiply: a
0.5x round and a 2x round average to 1x), so the printed ratio is their geometric mean.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A ratio over rounds: geometric mean, its 95 % interval, and what that says of the target."""

    ratio: float
    low: float
    high: float
    rounds: int
    target: float  # the ratio should be >= target
    precision: float

    @property
    def verdict(self) -> str:
        if self.rounds < 2:
            return "open (one round: no interval)"
        if self.low >= self.target:
            return "meets the target"
        if self.high < self.target:
            return "misses the target"
        if self.high / self.low - 1.0 <= 2 * self.precision:
            return f"at the target (within +-{self.precision:.0%})"
        return "open: the interval still contains the target"

    @property
    def decided(self) -> bool:
        return not self.verdict.startswith("open")

    def line(self, name: str) -> str:
        return (
            f"{name} = {self.ratio:.3f}  95% CI [{self.low:.3f}, {self.high:.3f}] over {self.rounds} rounds"
            f"  (target >= {self.target:g}): {self.verdict}"
        )


def estimate(ratios: list[float], target: float, precision: float = 0.01) -> Estimate:
    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return Estimate(math.exp(mean), 0.0, math.inf, len(logs), target, precision)
    half = stats.t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return Estimate(math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(logs), target, precision)


@dataclass(frozen=True)
class Budget:
    """How long a benchmark may keep measuring."""

    min_rounds: int = 3
    max_rounds: int = 30
    time_limit_s: float = 300.0
    precision: float = 0.01  # stop once the interval is this close around the ratio


def until_decided(
    one_round: Callable[[int], dict[str, float]],
    targets: dict[str, float],
    budget: Budget = Budget(),
    agree: Callable[[bool], bool] = lambda stop: stop,
    report: Callable[[str], None] = print,
) -> dict[str, Estimate]:
    """Call `one_round(i)` -> {name: ratio} until every ratio's target is decided or the budget
    is spent. `agree` makes every rank of an MPI job take rank 0's decision to stop."""
    ratios: dict[str, list[float]] = {name: [] for name in targets}
    start = time.monotonic()
    found: dict[str, Estimate] = {}
    for i in range(budget.max_rounds):
        for name, value in one_round(i).items():
            ratios[name].append(value)
        found = {name: estimate(ratios[name], targets[name], budget.precision) for name in targets}
        report(f"round {i + 1}: " + ", ".join(f"{name} {values[-1]:.3f}" for name, values in ratios.items()))
        spent = time.monotonic() - start
        enough = i + 1 >= budget.min_rounds and all(e.decided for e in found.values())
        out_of_time = spent + spent / (i + 1) > budget.time_limit_s  # another round would overrun
        if agree(enough or out_of_time):
            break
    return found
