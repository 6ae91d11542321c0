"""Options that no run can use are refused before any work, by argparse, naming the option."""

from __future__ import annotations

import pytest
from conftest import hpml


@pytest.mark.parametrize(
    "args, message",
    [
        (["synth", "--per-class", "0"], "argument --per-class: 0 is below 1"),
        (["synth", "--per-class", "-3"], "argument --per-class: -3 is below 1"),
        (["synth", "--per-class", "many"], "argument --per-class: 'many' is not a whole number"),
        (["covidx", "build", "--sources", "raw", "--workers", "-1"], "argument --workers: -1 is below 0"),
    ],
)
def test_refused_naming_the_option(tmp_path, args, message):
    proc = hpml(*args, "--out", tmp_path / "out", check=False, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
