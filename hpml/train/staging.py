"""Node-local staging: the shards copied to the node's scratch disk, verified, read from there.

With `data.stage_dir` (Snellius: `$TMPDIR` on the node's NVMe) the first rank of each node
copies the shards the run reads; every copy is checked against the manifest's sha256 before
it is renamed into place, and a copy that already matches is kept (a requeued job on the
same node copies nothing).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hpml.core.files import file_sha256
from hpml.core.world import World
from hpml.shards.manifest import MANIFEST
from hpml.shards.shardset import ShardSet

log = logging.getLogger(__name__)


def stage(shards: ShardSet, stage_dir: Path, world: World, splits: tuple[str, ...]) -> ShardSet:
    """Copy the shards of `splits` (and the manifest) to node-local storage, verified by sha256.

    The first rank of each node copies; the caller must hold a barrier afterwards.
    """
    target = Path(stage_dir) / "hpml-shards"
    if world.local_rank != 0:
        return shards.at(target)
    target.mkdir(parents=True, exist_ok=True)
    for shard in shards.entries(*splits):
        dst = target / shard["file"]
        if dst.is_file() and dst.stat().st_size == shard["bytes"] and file_sha256(dst) == shard["sha256"]:
            continue
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(shards.root / shard["file"], tmp)
        if file_sha256(tmp) != shard["sha256"]:
            raise OSError(f"staging {shard['file']} to {target}: checksum mismatch after copy")
        tmp.rename(dst)
    shutil.copyfile(shards.manifest_path, target / MANIFEST)
    log.info("staged shards to %s", target)
    return shards.at(target)
