"""hpml.bench.rounds: the interval is Student's t on log ratios, and rounds stop exactly when decided."""

import math
import time

import numpy as np
import pytest
from scipy import stats

from hpml.bench.rounds import Budget, estimate, until_decided


def test_interval_is_students_t_on_the_log_ratios():
    ratios = [0.93, 1.02, 0.97, 1.08, 0.99]
    logs = np.log(ratios)
    low, high = stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=stats.sem(logs))
    found = estimate(ratios, target=0.98)
    assert found.ratio == pytest.approx(math.exp(logs.mean()))
    assert (found.low, found.high) == (pytest.approx(math.exp(low)), pytest.approx(math.exp(high)))
    assert found.verdict == "open: the interval still contains the target"


@pytest.mark.parametrize(
    ("ratios", "verdict"),
    [
        ([1.50, 1.52, 1.49], "meets the target"),
        ([0.80, 0.81, 0.79], "misses the target"),
        ([0.9801, 0.9802, 0.9799], "at the target (within +-1%)"),
        ([1.2], "open (one round: no interval)"),
    ],
)
def test_verdicts(ratios, verdict):
    assert estimate(ratios, target=0.98).verdict == verdict


def rounds_of(values):
    it = iter(values)
    return lambda i: {"r": next(it)}


def test_stops_at_min_rounds_once_decided_and_runs_on_while_open():
    calls = []
    found = until_decided(lambda i: calls.append(i) or {"r": 1.5 + 0.01 * (i % 2)}, {"r": 1.0}, report=lambda _: None)
    assert calls == [0, 1, 2] and found["r"].verdict == "meets the target"
    noisy = [0.7, 1.4] * 20
    found = until_decided(rounds_of(noisy), {"r": 1.0}, Budget(max_rounds=8), report=lambda _: None)
    assert found["r"].rounds == 8 and not found["r"].decided


def test_every_ratio_must_be_decided():
    values = iter(range(100))
    one_round = lambda i: {"clear": 2.0 + 0.001 * (i % 2), "noisy": (0.6, 1.5)[next(values) % 2]}  # noqa: E731
    found = until_decided(one_round, {"clear": 1.0, "noisy": 1.0}, Budget(max_rounds=6), report=lambda _: None)
    assert found["clear"].verdict == "meets the target" and found["noisy"].rounds == 6


def test_time_limit_stops_before_a_round_would_overrun():
    def slow(i):
        time.sleep(0.1)
        return {"r": (0.6, 1.5)[i % 2]}

    start = time.monotonic()
    found = until_decided(slow, {"r": 1.0}, Budget(time_limit_s=0.35), report=lambda _: None)
    assert found["r"].rounds == 3 and time.monotonic() - start < 0.35 + 0.1


def test_the_ranks_take_one_decision():
    """`agree` (an MPI broadcast in `hpml bench loop`) overrides this process's own decision."""
    found = until_decided(
        lambda i: {"r": 2.0}, {"r": 1.0}, Budget(max_rounds=5), agree=lambda stop: False, report=lambda _: None
    )
    assert found["r"].rounds == 5
