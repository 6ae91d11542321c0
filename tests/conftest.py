"""Shared fixtures: the real corpus in ../shared (skipped when absent) and a synthetic one."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "cxr-real"
WORKERS = REPO / "tests" / "workers"  # scripts that MPI ranks run
DEMO = REPO / "configs" / "demo.yaml"
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


TIERS = ("unit", "pipeline", "slurm", "system")


def pytest_collection_modifyitems(items):
    """Each test carries the marker of its folder: tests/<tier>/test_*.py."""
    for item in items:
        tier = Path(item.fspath).relative_to(REPO / "tests").parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.fspath}: tests live in tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def real_corpus() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real chest X-ray corpus not present at {REAL}")
    return REAL


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    from preprocess.synth.corpus import synth

    out = tmp_path_factory.mktemp("synth")
    synth(out, per_class=12, seed=3)
    return out


@pytest.fixture()
def corpus_copy(synth_corpus, tmp_path) -> Path:
    """A private, writable copy of the synthetic corpus for tests that damage it."""
    dst = tmp_path / "corpus"
    shutil.copytree(synth_corpus, dst)
    return dst


def sets(*overrides: str) -> list[str]:
    """`--set` options: sets("train.epochs=1", "data.shards=S") -> [--set, train.epochs=1, --set, ...]."""
    return [arg for item in overrides for arg in ("--set", item)]


def hpml(*args: str, np: int = 0, timeout: float = 600, check: bool = True, **kw):
    """Run the real `hpml` command (under `mpirun -np N` when np > 0)."""
    cmd = [sys.executable, "-m", "hpml.cli", *map(str, args)]
    if np:
        cmd = ["mpirun", "-np", str(np), *cmd]
    env = {**os.environ, **MPI_ENV, **kw.pop("env", {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_data(root: Path, per_class: int, seed: int) -> Path:
    """raw/ (hpml synth) -> split/ (covidx build) -> shards/ (2-rank preprocess, demo config); returns root."""
    from preprocess.covidx.build import build
    from preprocess.synth.corpus import synth

    synth(root / "raw", per_class=per_class, seed=seed)
    build(sorted((root / "raw").iterdir()), root / "split")
    hpml("preprocess", "--config", DEMO, "--split-dir", root / "split", "--out", root / "shards", np=2)
    return root


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """30 images per class through the real pipeline (raw/, split/, shards/); shared, read only."""
    return make_data(tmp_path_factory.mktemp("small-data"), per_class=30, seed=8)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A model trained by the real pipeline on the demo's synthetic data, shared by the evaluation
    and Grad-CAM tests: synth -> covidx build -> mpirun -np 2 preprocess -> mpirun -np 2 train.
    Returns the root holding raw/, split/, shards/ and run/."""
    from preprocess.covidx.build import build
    from preprocess.covidx.options import BuildOptions

    root = tmp_path_factory.mktemp("demo-run")
    demo = REPO / "configs" / "demo.yaml"
    hpml("synth", "--out", root / "raw", "--per-class", "80", "--seed", "4")
    # 31 test images (COVID-19 10: Figure1's a/b/c films of one patient stay together, so an odd
    # COVID-19 target can overshoot): not a multiple of ranks x batch, so a dropped remainder would show.
    build(
        sorted((root / "raw").iterdir()),
        root / "split",
        BuildOptions(seed=1, test_per_class={"normal": 11, "pneumonia": 10, "COVID-19": 10}),
    )
    hpml("preprocess", "--config", demo, "--split-dir", root / "split", "--out", root / "shards", np=2)
    overrides = sets("train.epochs=6", "train.steps_per_epoch=30")
    hpml("train", "--config", demo, "--shards", root / "shards", "--run-dir", root / "run", *overrides, np=2)
    return root


@pytest.fixture(autouse=True)
def hpml_loggers_propagate():
    """A command run in-process (hpml.core.logs.setup_logging) detaches the hpml loggers from the
    root logger, where pytest's caplog listens: put them back after every test."""
    yield
    for name in ("hpml", "preprocess"):
        log = logging.getLogger(name)
        log.handlers.clear()
        log.setLevel(logging.NOTSET)
        log.propagate = True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real SLURM cluster (tests/slurmcluster.py) per test module; skipped where none can run."""
    from slurmcluster import LocalSlurm, SlurmUnavailable

    c = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except SlurmUnavailable as exc:
        pytest.skip(f"no local SLURM cluster: {exc}")
    yield c
    c.stop()
