"""One holder per lock (hpml.core.exclusive, used by RUN/.lock and OUT/.lock), also under races.

The race tests run many trials of several processes that start the same takeover at the same
moment (a barrier) and count the trials in which more than one of them came away holding the
lock: there must be none, and exactly one winner each time.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpml.core import exclusive
from hpml.train.run_lock import RunLocked, acquire_lock, release_lock

TRIALS, CONTENDERS = {"stale": 100, "none": 300}, 6  # the old lock's fresh-start race is rarer: more trials


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def stale_holder(**extra) -> dict:
    """A lock holder on this host whose process is gone."""
    return {"host": socket.gethostname(), "pid": dead_pid(), "started": "1", "job": None, "since": "then", **extra}


def _contender(run_dir: Path, barrier, results, trials: int) -> None:
    for trial in range(trials):
        barrier.wait()  # the coordinator has laid out the lock: everyone goes at once
        try:
            acquire_lock(run_dir)
            won = 1
        except RunLocked:
            won = 0
        except Exception as exc:  # a contender that crashed took nothing
            won = f"{type(exc).__name__}: {exc}"
        results.put((trial, won))
        barrier.wait()  # every contender has decided, the winners still hold the lock
        if won == 1:
            release_lock(run_dir)
        barrier.wait()  # released


def race(run_dir: Path, start: str, trials: int, contenders: int = CONTENDERS) -> dict[str, int]:
    """Trials of `contenders` processes taking RUN/.lock at once, from a `start` lock: counts."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(contenders + 1), ctx.Queue()
    procs = [ctx.Process(target=_contender, args=(run_dir, barrier, results, trials)) for _ in range(contenders)]
    for p in procs:
        p.start()
    lock = run_dir / ".lock"
    winners: dict[int, int] = {}
    crashed = []
    try:
        for _ in range(trials):
            lock.unlink(missing_ok=True)
            if start == "stale":
                lock.write_text(json.dumps(stale_holder()) + "\n")
            barrier.wait(timeout=60)
            barrier.wait(timeout=60)
            for _ in range(contenders):
                t, won = results.get(timeout=60)
                if isinstance(won, str):
                    crashed.append(won)
                winners[t] = winners.get(t, 0) + (won == 1)
            barrier.wait(timeout=60)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    counts = {
        "trials": trials,
        "one_winner": sum(n == 1 for n in winners.values()),
        "double_winners": sum(n > 1 for n in winners.values()),
        "no_winner": sum(n == 0 for n in winners.values()),
        "crashed": len(crashed),
    }
    print(f"race from a {start} lock, {contenders} contenders: {counts} {crashed[:1]}", file=sys.stderr)
    return counts


@pytest.mark.parametrize("start", ["stale", "none"])
def test_concurrent_takers_never_both_win(tmp_path, start):
    """A stale lock taken over (or a fresh one taken) by 6 processes at once: one winner, always,
    and every other contender refused (RunLocked, which names the holder), none crashed."""
    counts = race(tmp_path, start, TRIALS[start])
    assert counts["double_winners"] == 0 and counts["one_winner"] == TRIALS[start] and counts["crashed"] == 0, counts


def _hold(run_dir: Path, ready, done) -> None:
    acquire_lock(run_dir)
    ready.set()
    done.wait(60)


def test_a_live_holder_in_the_same_slurm_job_is_refused(tmp_path, monkeypatch):
    """A second `hpml train` step of one SLURM job while the first lives: refused, not taken over."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_hold, args=(tmp_path, ready, done))
    first.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunLocked, match=rf"is being trained by host \S+ pid {first.pid} \(SLURM job 4242"):
            acquire_lock(tmp_path)
    finally:
        done.set()
        first.join(30)
    assert json.loads((tmp_path / ".lock").read_text())["pid"] != os.getpid()  # untouched while it lived
    acquire_lock(tmp_path)  # its holder gone: taken over
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    release_lock(tmp_path)
    assert not (tmp_path / ".lock").exists()


def test_holders_on_other_hosts(monkeypatch):
    """What SLURM says decides for another host; what cannot be told counts as alive."""
    env = {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "1"}
    asked = []

    def squeue(*args):
        asked.append(args)
        return {"-s": ["7.0", "7.batch"], "-j": ["RUNNING"] if args[1] == "8" else []}[args[0]]

    monkeypatch.setattr(exclusive, "_squeue", squeue)
    other = {"host": "elsewhere", "pid": 1, "since": "then"}
    assert exclusive.holder_alive({**other, "job": "7", "restart": 0}, env) is False  # before the requeue
    assert exclusive.holder_alive({**other, "job": "7", "restart": 1, "step": "0"}, env) is True  # step 7.0 runs
    assert exclusive.holder_alive({**other, "job": "7", "restart": 1, "step": "3"}, env) is False  # 7.3 ended
    assert exclusive.holder_alive({**other, "job": "7", "restart": 1}, env) is True  # which step: unknown
    assert exclusive.holder_alive({**other, "job": "8"}, env) is True
    assert exclusive.holder_alive({**other, "job": "9"}, env) is False
    assert exclusive.holder_alive({**other, "job": None}, env) is True  # nobody to ask
    monkeypatch.setattr(exclusive, "_squeue", lambda *a: None)  # SLURM cannot be asked
    assert exclusive.holder_alive({**other, "job": "9"}, env) is True


def test_unreadable_locks_and_planted_symlinks_are_not_taken(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text("")  # cannot tell who holds it: refuse, say how to clear it
    with pytest.raises(exclusive.Locked, match="unknown holder.*remove"):
        exclusive.acquire(lock)
    lock.unlink()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    lock.symlink_to(victim)
    with pytest.raises(exclusive.Locked):
        exclusive.acquire(lock)
    assert victim.read_text() == "precious" and not list(tmp_path.glob("*.tmp"))


def test_a_takeover_survives_a_breaker_left_by_a_dead_taker(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps(stale_holder(token="a")))
    (tmp_path / ".lock.break").write_text(json.dumps(stale_holder(token="b")))  # died mid-takeover
    start = time.monotonic()
    assert exclusive.acquire(lock) == lock and time.monotonic() - start < 5
    assert exclusive.read_holder(lock)["pid"] == os.getpid() and not (tmp_path / ".lock.break").exists()
    exclusive.release(lock)
    assert not lock.exists()
