"""Every `hpml` command in README.md and docs/*.md runs, as written, on demo-sized data.

The ```bash blocks of each page run in document order, README first, each as one bash script
in a shared workspace (an empty folder with `configs/` beside it), so a page may use what the
README's block made (raw/, split/, shards/, runs/demo). Two things are sized for a test and
said here: `hpml submit` gets `--dry-run` (no cluster is needed to check what would be queued:
tests/slurm submits for real), and the measuring `hpml bench` commands stop after two rounds
(`--max-rounds 2`; tests/unit/test_bench_rounds.py tests when rounds stop). And the ImageNet
weights that the seed config names were fetched on the "login node": HPML_WEIGHTS_DIR holds a
stand-in under the Keras file's name (no internet here; submitting only checks that it is there,
and tests/unit/test_weights_fetch.py fetches for real from a local server). Synopses with
placeholders live in ```text blocks, which are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MPI_ENV, REPO

from hpml.models import weights_cache

pytestmark = pytest.mark.slow  # runs every documented command: about 5 minutes

PAGES = ["README.md", *(f"docs/{p}.md" for p in ("covidx", "preprocessing", "training", "evaluation", "slurm"))]
PAGES += ["docs/benchmarks.md", "docs/failures.md"]
WRAPPER = """#!/usr/bin/env bash
# hpml, as the documentation's test runs it (tests/pipeline/test_documented_commands.py)
args=("$@")
case "$1" in
  submit) [[ " $* " == *" --dry-run "* ]] || args+=(--dry-run) ;;
  bench) [[ "$2" == scaling ]] || args+=(--max-rounds 2) ;;
esac
exec {python} -m hpml.cli "${{args[@]}}"
"""


def bash_blocks(page: Path) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", page.read_text(), re.S | re.M)


def hpml_commands(block: str) -> list[str]:
    """The logical lines (continuations joined) that run hpml."""
    lines = block.replace("\\\n", " ").splitlines()
    return [line for line in lines if re.match(r"^(\w+=\S+ )*(mpirun -np \d+ )?hpml ", line.strip())]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    (root / "configs").symlink_to(REPO / "configs")
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    (bin_dir / "hpml").write_text(WRAPPER.format(python=sys.executable))
    (bin_dir / "hpml").chmod(0o755)
    weights = root / ".weights" / weights_cache.TABLE["resnet50v2"].name
    weights.parent.mkdir()
    weights.write_bytes(b"a stand-in for Keras' ImageNet file")
    return root


def test_the_pages_hold_commands_and_every_page_is_run():
    counts = {page: sum(len(hpml_commands(b)) for b in bash_blocks(REPO / page)) for page in PAGES}
    assert all(counts.values()), counts
    pages = {str(p.relative_to(REPO)) for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
    without = {p for p in pages if any(hpml_commands(b) for b in bash_blocks(REPO / p))}
    assert without <= set(PAGES), f"pages with commands that no test runs: {without - set(PAGES)}"


@pytest.mark.parametrize("page", PAGES)
def test_documented_commands_run(page, workspace):
    path = f"{workspace / '.bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, **MPI_ENV, "PATH": path, "HPML_WEIGHTS_DIR": str(workspace / ".weights")}
    for i, block in enumerate(bash_blocks(REPO / page), 1):
        script = f"set -euo pipefail\n{block}"
        proc = subprocess.run(
            ["bash", "-c", script], cwd=workspace, env=env, capture_output=True, text=True, timeout=1500
        )
        output = f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        assert proc.returncode == 0, f"{page}, bash block {i}, exit {proc.returncode}:\n{block}\n{output}"
