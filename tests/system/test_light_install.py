"""The login node's install: the hpml wheel without extras, into a fresh virtualenv, from the package index.

No TensorFlow, Horovod or MPI gets installed, and the commands a login node runs work from the
wheel alone (no checkout beside it): the demo config and the cluster profiles ship inside it.
Skipped when the package index cannot be reached. (tests/unit/test_packaging.py checks the same
split quickly, in this environment, by refusing the training stack's imports.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

import hpml

TRAINING_ONLY = ("tensorflow", "horovod", "mpi4py", "scipy", "h5py", "sklearn")


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def pip(*args) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def test_light_wheel_runs_the_login_node_commands(tmp_path):
    # one pin of the light install, fetched alone: is the index there?
    probe = subprocess.run(
        pip("download", "-q", "--no-deps", "--timeout", "15", "--retries", "1", "-d", tmp_path / "x", "pyyaml==6.0.2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        pytest.skip(f"the package index is not reachable: {(probe.stderr.strip().splitlines() or ['?'])[-1]}")

    # The wheel, built from a clean copy of the tree (the checkout's build/ may hold stale modules);
    # .git beside it so that the build records the commit, as a build in the checkout does.
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    run("bash", REPO / "containers" / "install.sh", "--clean-copy", REPO, src)
    if (REPO / ".git").exists():
        (src / ".git").symlink_to(REPO / ".git")
    run(*pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, src))
    (wheel,) = wheels.glob("hpml-*.whl")

    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()  # outside the checkout: nothing of it on sys.path
    env = {**os.environ, "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}  # no sbatch: nothing is queued
    env.pop("PYTHONPATH", None)
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(*pip("--python", python, "install", "-q", wheel), timeout=900)
    run(*pip("--python", python, "check"))

    def py(code: str) -> str:
        return run(python, "-c", code, cwd=work, env=env).stdout.strip()

    def hpml_(*args) -> str:
        return run(venv / "bin" / "hpml", *args, cwd=work, env=env).stdout

    present = py(f"import importlib.util as u; print([m for m in {TRAINING_ONLY} if u.find_spec(m)])")
    assert present == "[]", f"the light install pulled in {present}"

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = head.stdout.strip() if head.returncode == 0 and (REPO / ".git").exists() else "unknown"
    assert hpml_("--version").strip() == f"hpml {hpml.__version__} (commit {commit})"

    config = Path(py("from hpml.cli.demo import default_config; print(default_config())"))
    assert config.is_file() and config.is_relative_to(venv), config  # the wheel's copy, not the checkout's
    shards = work / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    submit = ["submit", "train", "--cluster", "local", "--config", config, "--run-dir", "run"]
    out = hpml_(*submit, "--set", f"data.shards={shards}", "--dry-run")
    assert "#SBATCH --partition=debug" in out and "# would run: sbatch" in out
    assert "training: not started" in hpml_("status", "run")
    assert "efficiency of run" in hpml_("efficiency", "run")
    assert "image_size: 64" in hpml_("config", "show", "--config", config)

    sw = work / "sw"
    points = [{"index": i, "overrides": [f"train.lr={i + 1}"], "label": f"lr={i + 1}"} for i in range(2)]
    sw.mkdir()
    (sw / "sweep.json").write_text(json.dumps({"grid": {"train.lr": [1, 2]}, "points": points, "submissions": []}))
    for i in range(2):
        (sw / f"p{i:03d}").mkdir()
        (sw / f"p{i:03d}" / "history.csv").write_text(
            f"epoch,loss,accuracy,val_loss,val_accuracy\n0,1.0,0.5,0.9,0.5\n1,0.8,0.6,{0.7 + i / 10},0.7\n"
        )
    report = hpml_("sweep", "report", sw, "--metric", "val_loss")
    assert "| point | train.lr |" in report and (sw / "curves.png").is_file()
    assert "usage: hpml demo" in hpml_("demo", "--help")
