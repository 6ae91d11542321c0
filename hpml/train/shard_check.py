"""Shards that are missing or damaged: found before training, or named when TensorFlow trips.

TensorFlow reports a damaged TFRecord as "corrupted record at 4495", naming no file. Before
the first step (data.verify, default on) every rank checks the sha256 of its share of the
shards and all ranks stop together on any mismatch; if a shard is damaged later, the reader's
error is turned into one that names the shard and says what to do.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from hpml.core.files import file_sha256
from hpml.core.world import World
from hpml.parallel import distributed
from hpml.shards.manifest import ShardError
from hpml.shards.schema import compression_of
from hpml.shards.shardset import ShardSet


def explain_data_error(exc: tf.errors.OpError, files: list[str], shard_dir: Path) -> ShardError:
    """A clear error for TensorFlow's "corrupted record at N": which shard, and what to do."""
    names = ", ".join(Path(f).name for f in files[:3])
    where = _first_broken(files) or f"one of the {len(files)} shard(s) this rank read ({names}...)"
    reason = (exc.message or str(exc)).splitlines()[0][:200]
    return ShardError(
        f"{where}: cannot read the shard ({type(exc).__name__}: {reason}). Run `hpml shards verify {shard_dir}`; "
        "rerunning `hpml preprocess` with the same settings rewrites exactly the damaged shards."
    )


def _first_broken(files: list[str]) -> str | None:
    for f in files:
        if not Path(f).is_file():
            return f"{f} (missing)"
        try:
            for _ in tf.data.TFRecordDataset(f, compression_type=compression_of(f)):
                pass
        except tf.errors.OpError:
            return f
    return None


def verify_shards(shards: ShardSet, world: World, splits: tuple[str, ...]) -> None:
    """Every rank checks the sha256 of its share of the shards; all ranks raise on any problem."""
    entries = sorted(shards.entries(*splits), key=lambda s: s["file"])
    problems = []
    for shard in entries[world.rank :: world.size]:
        path = shards.root / shard["file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != shard["bytes"] or file_sha256(path) != shard["sha256"]:
            problems.append(f"{path}: checksum differs from the manifest (damaged or replaced)")
    problems = sorted(p for part in distributed.gather_objects(problems, "verify") for p in part)
    if problems:
        raise ShardError(
            f"{len(problems)} shard(s) do not match {shards.manifest_path}: {'; '.join(problems[:5])}. Run "
            f"`hpml shards verify {shards.root}` and rerun `hpml preprocess` to rewrite them (data.verify: false skips "
            "this check)."
        )
