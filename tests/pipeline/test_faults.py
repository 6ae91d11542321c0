"""The collective failure rule under injected faults (hpml/core/failure.py, hpml/core/faults.py).

For every phase of `hpml preprocess` and `hpml train`, on rank 0 and rank 1, an exception and a
SIGKILL: the job must exit non-zero within BOUND_S, say what happened, leave nothing that looks
complete but is not, and a plain rerun must complete with the result of a clean run (the same
manifest; bit-identical weights).
"""

import json
import os
import shutil
import subprocess
import time

import pytest
from conftest import REPO, hpml
from shardmaker import write_shards
from trainutil import SMALL, digests, history, run, train_cmd

from hpml.core import history as history_fields
from hpml.core.files import file_sha256
from hpml.shards.manifest import JOURNAL
from hpml.shards.verify import verify
from hpml.train.checkpoints import complete
from preprocess.covidx.build import build
from preprocess.synth.corpus import synth

DEMO = REPO / "configs" / "demo.yaml"
BOUND_S = 120  # a hang is caught by this; a failure typically ends the job in seconds
PREPROCESS_PHASES = [
    ("read_split", 0),
    ("plan", 0),
    ("share", 0),
    ("share", 1),
    ("encode@2", 0),
    ("encode@2", 1),
    ("shard_close", 0),
    ("shard_close", 1),
    ("gather", 0),
    ("gather", 1),
    ("manifest", 0),
    ("report", 0),
]
TRAIN_PHASES = [
    ("startup", 0),
    ("plan", 0),
    ("plan", 1),
    ("verify", 0),
    ("verify", 1),
    ("build", 0),
    ("build", 1),
    ("restore", 0),
    ("restore", 1),
    ("step@3", 0),
    ("step@3", 1),
    ("validate", 0),
    ("validate", 1),
    ("checkpoint_write", 0),
]
EVALUATE_PHASES = [
    ("load", 0),
    ("load", 1),
    ("predict", 0),
    ("predict", 1),
    ("predict_batch", 1),
    ("gather", 0),
    ("gather", 1),
    ("report", 0),
]
PRE_SETS = ["--set", "data.image_size=32", "--set", "preprocess.shard_mb=0.003"]
TRAIN_SETS = [*SMALL, "train.epochs=2"]


def matrix(phases: list[tuple[str, int]]) -> list:
    """An exception on every listed (phase, rank); a SIGKILL once per phase.

    A raise tests the agreement between ranks, so both ranks matter. A SIGKILL is seen by mpirun,
    not by our code, the same whichever rank dies: one per phase, on rank 1 where the phase runs
    there (the rank that is not also writing the shared outputs).
    """
    kills = {}
    for phase, rank in phases:
        kills[phase] = max(kills.get(phase, rank), rank)
    cases = [(p, r, "raise") for p, r in phases] + [(p, r, "kill") for p, r in kills.items()]
    return [pytest.param(*c, id=f"{c[0]}-rank{c[1]}-{c[2]}") for c in cases]


RESULTS = {"faults": 0, "hangs": 0, "half_written": 0, "reruns_completed": 0}
# Injection points inside a phase (hpml.core.failure.at) are reported under the phase they are in.
ENCLOSING = {
    "encode": "write",
    "shard_close": "write",
    "step": "fit",
    "checkpoint_write": "checkpoint",
    "predict_batch": "predict",
}


def _check_failed(code: int, seconds: float, log: str, phase: str, rank: int, kind: str) -> None:
    RESULTS["faults"] += 1
    if seconds >= BOUND_S:
        RESULTS["hangs"] += 1
    assert code != 0 and seconds < BOUND_S, f"exit {code} after {seconds:.0f}s\n{log}"
    name = phase.split("@")[0]
    if kind in ("raise", "enospc"):
        error = "InjectedFault" if kind == "raise" else "CheckpointWriteError"
        reported = f"[rank {rank}/2, phase '{ENCLOSING.get(name, name)}']: {error}: "
        assert reported in log and f"injected fault: {kind} at phase '{name}'" in log, log
        assert log.count("hpml: error") == 1, log  # said once
    else:
        assert "signal 9" in log or "Killed" in log, log  # mpirun names the dead rank


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-split")
    synth(root / "raw", per_class=6, seed=4)
    build(sorted((root / "raw").iterdir()), root / "split")
    return root / "split"


@pytest.fixture(scope="module")
def clean_manifest(split, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "shards"
    hpml("preprocess", "--config", DEMO, "--split-dir", split, "--out", out, *PRE_SETS, np=2)
    return json.loads((out / "manifest.json").read_text())


def test_missing_split_json_stops_every_rank_fast(tmp_path):
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "train.txt").write_text("p1 images/a.png normal covid-chestxray-dataset\n")
    start = time.monotonic()
    proc = hpml(
        "preprocess",
        "--config",
        DEMO,
        "--split-dir",
        tmp_path / "split",
        "--out",
        tmp_path / "x",
        np=2,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2 and time.monotonic() - start < 60, proc.stderr
    assert "split.json: not found" in proc.stderr and proc.stderr.count("hpml: error") == 1


@pytest.mark.slow  # the fault matrix: 56 faults, about 13 minutes
@pytest.mark.parametrize("phase, rank, kind", matrix(PREPROCESS_PHASES))
def test_preprocess_fault(split, clean_manifest, tmp_path, phase, rank, kind):
    out = tmp_path / "shards"
    args = ["preprocess", "--config", DEMO, "--split-dir", split, "--out", out, *PRE_SETS]
    start = time.monotonic()
    proc = hpml(*args, np=2, check=False, timeout=BOUND_S + 60, env={"HPML_FAULT": f"{phase}:{rank}:{kind}"})
    _check_failed(proc.returncode, time.monotonic() - start, proc.stdout + proc.stderr, phase, rank, kind)
    # Nothing may look complete that is not: a manifest only if whole, a final-named shard only with
    # a journal entry that matches its bytes.
    whole = (not (out / "manifest.json").exists() or verify(out) == []) and all(
        json.loads((out / JOURNAL / f"{s.name}.json").read_text())["sha256"] == file_sha256(s)
        for s in out.glob("*.tfrecord")
    )
    RESULTS["half_written"] += not whole
    assert whole
    hpml(*args, np=2)  # the plain rerun
    assert json.loads((out / "manifest.json").read_text()) == clean_manifest and verify(out) == []
    RESULTS["reruns_completed"] += 1


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("fault-train")
    write_shards(
        out,
        {
            "train-00000-00000.tfrecord": [0, 1, 2] * 8,
            "train-00001-00000.tfrecord": [2, 1] * 6,
            "val-00000-00000.tfrecord": [0, 1, 2],
            "val-00001-00000.tfrecord": [2, 0],
        },
    )
    return out


@pytest.fixture(scope="module")
def clean_run(train_shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("clean-train") / "run"
    code, log = run(train_cmd(train_shards, run_dir, *TRAIN_SETS))
    assert code == 0, log
    return run_dir, digests(log)["0"]


@pytest.fixture(scope="module")
def clean_digest(clean_run):
    return clean_run[1]


@pytest.fixture(scope="module")
def clean_metrics(clean_run):
    hpml("evaluate", "--run-dir", clean_run[0], "--split", "val", np=2)
    return json.loads((clean_run[0] / "eval" / "val" / "metrics.json").read_text())


@pytest.mark.slow  # the fault matrix: 56 faults, about 13 minutes
@pytest.mark.parametrize("phase, rank, kind", matrix(EVALUATE_PHASES))
def test_evaluate_fault(clean_run, clean_metrics, tmp_path, phase, rank, kind):
    run_dir = tmp_path / "run"
    shutil.copytree(clean_run[0], run_dir, ignore=shutil.ignore_patterns("eval"))
    args = ["evaluate", "--run-dir", run_dir, "--split", "val"]
    start = time.monotonic()
    proc = hpml(*args, np=2, check=False, timeout=BOUND_S + 60, env={"HPML_FAULT": f"{phase}:{rank}:{kind}"})
    _check_failed(proc.returncode, time.monotonic() - start, proc.stdout + proc.stderr, phase, rank, kind)
    out = run_dir / "eval" / "val"
    whole = not (out / "metrics.json").exists()  # written last: if it is there, the report is complete
    RESULTS["half_written"] += not whole
    assert whole
    hpml(*args, np=2)
    again = json.loads((out / "metrics.json").read_text())
    assert {k: v for k, v in again.items() if k != "checkpoint"} == {
        k: v for k, v in clean_metrics.items() if k != "checkpoint"
    }
    RESULTS["reruns_completed"] += 1


@pytest.mark.slow  # the fault matrix: 56 faults, about 13 minutes
@pytest.mark.parametrize("phase, rank, kind", matrix(TRAIN_PHASES))
def test_train_fault(train_shards, clean_digest, tmp_path, phase, rank, kind):
    run_dir = tmp_path / "run"
    cmd = train_cmd(train_shards, run_dir, *TRAIN_SETS)
    start = time.monotonic()
    code, log = run(cmd, fault=f"{phase}:{rank}:{kind}", timeout=BOUND_S + 60)
    _check_failed(code, time.monotonic() - start, log, phase, rank, kind)
    _check_run_dir_whole(run_dir)
    code, log = run(cmd)
    assert code == 0, log
    assert set(digests(log).values()) == {clean_digest}  # the same weights as a run never interrupted
    assert [r["epoch"] for r in history(run_dir)] == ["0", "1"]
    RESULTS["reruns_completed"] += 1


@pytest.mark.slow  # the fault matrix: 56 faults, about 13 minutes
def test_train_disk_full_while_checkpointing(train_shards, clean_digest, tmp_path):
    run_dir = tmp_path / "run"
    cmd = train_cmd(train_shards, run_dir, *TRAIN_SETS)
    code, log = run(cmd, fault="checkpoint_write@2:0:enospc")  # the end of epoch 2
    _check_failed(code, 0, log, "checkpoint_write", 0, "enospc")
    assert "No space left on device" in log and "the previous checkpoint ckpt-" in log and "is intact" in log
    _check_run_dir_whole(run_dir)
    code, log = run(cmd)
    assert code == 0 and "resumed from ckpt-" in log and set(digests(log).values()) == {clean_digest}, log
    RESULTS["reruns_completed"] += 1


def _check_run_dir_whole(run_dir) -> None:
    """Every checkpoint that claims to be complete loads; history rows are whole lines."""
    import tensorflow as tf

    whole = True
    for prefix, _ in complete(run_dir / "checkpoints"):
        try:
            tf.train.load_checkpoint(str(prefix))
        except Exception:
            whole = False
    if (run_dir / "history.csv").exists():
        whole &= all(len(r) == len(history_fields.FIELDS) and None not in r.values() for r in history(run_dir))
    RESULTS["half_written"] += not whole
    assert whole


@pytest.mark.slow  # the fault matrix: 56 faults, about 13 minutes
def test_zz_matrix_summary(capsys):
    """Printed for the record (run last): faults injected, hangs, half-written outputs, reruns."""
    with capsys.disabled():
        print(f"\nfault matrix: {RESULTS}")
    assert RESULTS["hangs"] == 0 and RESULTS["half_written"] == 0


@pytest.mark.slow  # the fault matrix: 56 faults, about 13 minutes
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
def test_train_on_a_really_full_disk(train_shards, clean_digest, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(run_dir)], check=True)
    try:
        code, log = run(train_cmd(train_shards, run_dir, *SMALL, "train.epochs=1"))
        assert code == 0, log
        stats = os.statvfs(run_dir)
        used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        # Another job fills the scratch: what the run uses now, plus less than one checkpoint.
        subprocess.run(["mount", "-o", f"remount,size={used + 96 * 1024}", str(run_dir)], check=True)
        cmd = train_cmd(train_shards, run_dir, *TRAIN_SETS)
        code, log = run(cmd)
        assert code != 0 and "No space left on device" in log and "is intact" in log, log
        assert log.count("hpml: error") == 1 and "phase 'checkpoint'" in log
        _check_run_dir_whole(run_dir)
        assert not list(run_dir.rglob(".*.tmp*")) and not list(run_dir.glob("checkpoints/*_temp*"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(run_dir)], check=True)  # space freed
        code, log = run(cmd)
        assert code == 0 and "resumed from ckpt-4: epoch 1, step 0" in log, log
        assert set(digests(log).values()) == {clean_digest}
    finally:
        subprocess.run(["umount", "-l", str(run_dir)])
