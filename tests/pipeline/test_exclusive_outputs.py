"""Outputs are owned and exclusive: preprocessing deletes only what its journal says it wrote and
takes --out for itself (OUT/.lock); staging writes only into a private folder of its own.

(The lock's race tests are tests/unit/test_exclusive.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DEMO, MPI_ENV, hpml
from trainutil import kill_tree

from hpml.core.files import file_sha256
from hpml.core.world import World
from hpml.shards.shardset import ShardSet


@pytest.fixture()
def split(tmp_path) -> Path:
    """A 13-image train split of a synthetic corpus (its own copy: a test may plant a FIFO in it)."""
    from preprocess.covidx.build import build
    from preprocess.synth.corpus import synth

    synth(tmp_path / "raw", per_class=4, seed=3)
    build(sorted((tmp_path / "raw").iterdir()), tmp_path / "split")
    return tmp_path / "split"


def preprocess_cmd(split: Path, out: Path, *extra: str) -> list[str]:
    return ["preprocess", "--config", str(DEMO), "--split-dir", str(split), "--out", str(out), *extra]


def shard_files(out: Path) -> set[str]:
    return {p.name for p in out.glob("train-*.tfrecord")}


def test_files_preprocess_did_not_write_survive_runs_and_collisions_are_named(split, tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    theirs = {  # names the old clean-up matched: *.tfrecord*, .*.tmp, the write probe
        "notes.txt": "keep",
        "mine.tfrecord": "not a shard of this job",
        "train-00007-00000.tfrecord": "a rank this job does not have",
        "backup.tfrecord.gz.bak": "x",
        ".editor.tmp": "unsaved",
        ".write-test": "mine",
    }
    for name, text in theirs.items():
        (out / name).write_text(text)
    hpml(*preprocess_cmd(split, out), np=2)
    first = shard_files(out) - {"train-00007-00000.tfrecord"}
    assert first and {name: (out / name).read_text() for name in theirs} == theirs
    # a rerun with other settings (--force deletes the old shards): still only what the journal lists
    hpml(*preprocess_cmd(split, out, "--force", "--set", "preprocess.jpeg_quality=80"), np=2)
    assert {name: (out / name).read_text() for name in theirs} == theirs
    manifest = json.loads((out / "manifest.json").read_text())
    assert shard_files(out) - {"train-00007-00000.tfrecord"} == {s["file"] for s in manifest["shards"]}
    assert not (out / ".lock").exists() and not list((out / ".journal").glob("*.open"))
    # a file at a name this job must write is named, and left as it is
    other = tmp_path / "other"
    other.mkdir()
    (other / "train-00001-00000.tfrecord").write_text("somebody's")
    proc = hpml(*preprocess_cmd(split, other), np=2, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{other / 'train-00001-00000.tfrecord'} is in the way" in proc.stderr
    assert (other / "train-00001-00000.tfrecord").read_text() == "somebody's"


def test_a_second_preprocess_on_the_same_out_is_refused_naming_the_holder(split, tmp_path):
    """Job A takes --out and is stopped (SIGSTOP: alive, holding it); job B starts on the same --out."""
    out = tmp_path / "shards"
    env = {**os.environ, **MPI_ENV}
    cmd = ["mpirun", "-np", "2", sys.executable, "-m", "hpml.cli", *preprocess_cmd(split, out)]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ranks: list[int] = []
    second = None
    try:
        deadline = time.monotonic() + 120
        while not (out / ".journal").is_dir():  # made once rank 0 holds --out, before TensorFlow loads
            assert first.poll() is None and time.monotonic() < deadline, "job A ended early"
            time.sleep(0.01)
        ranks = [
            int(p)
            for p in subprocess.run(["pgrep", "-P", str(first.pid)], capture_output=True, text=True).stdout.split()
        ]
        for rank in ranks:
            os.kill(rank, signal.SIGSTOP)
        holder = json.loads((out / ".lock").read_text()) if (out / ".lock").exists() else {}
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        for rank in ranks:
            os.kill(rank, signal.SIGCONT)
        log_a, _ = first.communicate(timeout=300)
    finally:
        for rank in ranks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rank, signal.SIGCONT)
        if first.poll() is None:
            kill_tree(first.pid)
            first.wait()
    assert len(ranks) == 2 and first.returncode == 0, log_a
    assert second.returncode == 2, second.stdout + second.stderr
    assert (
        f"{out} is being written by another `hpml preprocess`: host {holder.get('host')} pid {holder.get('pid')}"
        in second.stderr
    )
    assert hpml("shards", "verify", out).returncode == 0
    assert not (out / ".lock").exists()


STAGE = """
import json, sys
from pathlib import Path
from hpml.core.files import file_sha256
from hpml.core.world import World
from hpml.shards.shardset import ShardSet
from hpml.train.staging import stage

shards = ShardSet.open(sys.argv[1])
staged = stage(shards, Path(sys.argv[2]), World(), ("train",))
print("staged", flush=True)
sys.stdin.readline()  # the other job has staged too
entries = shards.entries("train")
same = all(file_sha256(staged.root / s["file"]) == s["sha256"] for s in entries)
print(json.dumps({"root": str(staged.root), "same": same}), flush=True)
"""


def shard_set(root: Path, records: int) -> Path:
    from shardmaker import write_shards

    write_shards(root, {"train-00000-00000.tfrecord": [0, 1, 2][:records], "train-00000-00001.tfrecord": [1]})
    return root


def test_two_jobs_staging_on_one_node_keep_their_own_copies(tmp_path):
    """Same shard names, other content, one stage_dir, at once: each job reads its own shards."""
    stage_dir = tmp_path / "node-tmp"
    sets = [shard_set(tmp_path / "a", 3), shard_set(tmp_path / "b", 2)]
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", STAGE, str(s), str(stage_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in sets
    ]
    try:
        for job in jobs:
            line = job.stdout.readline()
            assert line == "staged\n", line + job.stderr.read()
        results = []
        for job in jobs:
            out, err = job.communicate("go\n", timeout=60)
            assert job.returncode == 0, err
            results.append(json.loads(out.splitlines()[-1]))
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
    assert [r["same"] for r in results] == [True, True]
    roots = [Path(r["root"]) for r in results]
    assert roots[0] != roots[1] and all(r.parent == stage_dir for r in roots)
    assert not any(r.exists() for r in roots)  # each job's folder is gone when it ends


def test_staging_does_not_write_through_a_planted_symlink(tmp_path, monkeypatch):
    from hpml.train import staging

    monkeypatch.setattr(staging, "_made", {}, raising=False)
    shards = ShardSet.open(shard_set(tmp_path / "shards", 3))
    stage_dir, victim = tmp_path / "shared-tmp", tmp_path / "victim"
    stage_dir.mkdir()
    victim.mkdir()
    (stage_dir / "hpml-shards").symlink_to(victim)  # another user's link at the old fixed name
    staged = staging.stage(shards, stage_dir, World(), ("train",))
    assert list(victim.iterdir()) == []
    root = staged.root
    assert root.parent == stage_dir and not root.is_symlink()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and root.stat().st_uid == os.getuid()
    assert all(file_sha256(root / s["file"]) == s["sha256"] for s in shards.entries("train"))
    staging.unstage()
    assert not root.exists() and (stage_dir / "hpml-shards").is_symlink() and list(victim.iterdir()) == []


def test_the_ranks_of_a_node_agree_on_its_staging_folder(tmp_path, monkeypatch):
    """Local rank 0 makes the folder; the other ranks of its node get its name (one allgather)."""
    from hpml.parallel import distributed
    from hpml.train import staging

    monkeypatch.setattr(staging, "_made", {}, raising=False)
    shards = ShardSet.open(shard_set(tmp_path / "shards", 3))
    node = (socket.gethostname(), os.environ.get("SLURMD_NODENAME", ""))  # how staging names a node
    made = staging.stage(shards, tmp_path / "tmp", World(0, 3, 0), ("train",)).root
    monkeypatch.setattr(staging, "_made", {}, raising=False)  # another process: rank 1 on the same node
    found = [(node, 0, str(made)), (node, 1, None), (("elsewhere", ""), 0, str(tmp_path / "x"))]
    monkeypatch.setattr(distributed, "gather_objects", lambda obj, name="gather": found)
    assert staging.stage(shards, tmp_path / "tmp", World(1, 3, 1), ("train",)).root == made
    assert not (tmp_path / "tmp" / "hpml-shards").exists()
