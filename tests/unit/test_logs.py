"""Rank-stamped log lines; progress on rank 0 only, a bar on a terminal, plain lines otherwise."""

import io
import logging
import os
import re
import select
import sys

from hpml.core.logs import Progress, setup_logging
from hpml.core.world import World


def test_every_line_carries_time_rank_size_and_level(capfd):
    setup_logging(World(rank=3, size=4))
    logging.getLogger("hpml.test").warning("disk %s", "full")
    line = capfd.readouterr().err.strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[3/4\] WARNING hpml\.test: disk full", line), line


def test_progress_prints_only_on_rank_zero_as_plain_periodic_lines():
    quiet, loud = io.StringIO(), io.StringIO()
    with Progress(10, "preprocess", World(1, 2), every=0.0, stream=quiet) as p:
        p.update(5)
    with Progress(10, "preprocess", World(0, 2), every=0.0, stream=loud) as p:
        p.update(4)
        p.set(10)
    assert quiet.getvalue() == ""
    lines = loud.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("preprocess: 10/10 img (100%)")
    assert all("img/s" in line and "\r" not in line for line in lines)


def test_progress_is_a_bar_on_a_real_terminal(monkeypatch):
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setattr(sys, "stdout", tty)  # stdout and the stream are the same real pty
        with Progress(8, "epoch 1/2", World(0, 1), unit="step", stream=tty) as p:
            p.update(8)
        tty.flush()
        out = b""
        while select.select([master], [], [], 0.5)[0]:
            out += os.read(master, 4096)
    os.close(master)
    out = out.decode()
    assert "epoch 1/2" in out and "8/8" in out and "\r" in out  # tqdm redraws in place
