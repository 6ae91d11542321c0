"""Node-local staging: the shards copied to the node's scratch disk, verified, read from there.

With `data.stage_dir` (Snellius: `$TMPDIR` on the node's NVMe) the first rank of each node
creates a private folder for this job in it (`hpml-<job>-XXXXXXXX`, mode 0700, created
exclusively: a shared /tmp cannot hand it a planted symlink or another job's files) and copies
the shards the run reads there; every copy is checked against the manifest's sha256 before it
is renamed into place. The other ranks of the node learn the folder's name from it (one
allgather). The folder is removed when the process that made it ends (`unstage`, at the latest
at exit); staging again in the same process reuses it and keeps the copies that still match.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from hpml.core.files import file_sha256
from hpml.core.world import World
from hpml.parallel import distributed
from hpml.shards.manifest import MANIFEST
from hpml.shards.shardset import ShardSet

log = logging.getLogger(__name__)
_made: dict[str, Path] = {}  # stage_dir -> the private folder this process made in it


def _node() -> tuple[str, str]:
    """Which node this rank runs on (SLURMD_NODENAME tells apart nodes that share a host name)."""
    return socket.gethostname(), os.environ.get("SLURMD_NODENAME", "")


def private_dir(stage_dir: Path) -> Path:
    """This job's own folder in `stage_dir`, made once per process (mkdtemp: new, 0700, ours)."""
    key = str(Path(stage_dir).absolute())
    if key not in _made:
        Path(stage_dir).mkdir(parents=True, exist_ok=True)
        job = os.environ.get("SLURM_JOB_ID") or "local"
        _made[key] = Path(tempfile.mkdtemp(prefix=f"hpml-{job}-", dir=stage_dir))
    return _made[key]


def unstage() -> None:
    """Remove the staging folders this process made (every rank of its node is done with them)."""
    while _made:
        _, folder = _made.popitem()
        shutil.rmtree(folder, ignore_errors=True)


atexit.register(unstage)  # at the latest when the process ends, however training ended


def _node_folder(found: list, stage_dir: Path) -> Path:
    """The folder the first rank of this node made, from every rank's (node, local rank, folder)."""
    folders = {folder for node, local_rank, folder in found if node == _node() and local_rank == 0 and folder}
    if len(folders) == 1:
        return Path(folders.pop())
    known = _made.get(str(Path(stage_dir).absolute()))
    if not folders and known is not None:
        return known  # no collective ran (one process standing in for a rank): its own folder
    raise RuntimeError(f"staging to {stage_dir}: this node's first rank named {len(folders)} folders: {folders}")


def stage(shards: ShardSet, stage_dir: Path, world: World, splits: tuple[str, ...]) -> ShardSet:
    """Copy the shards of `splits` (and the manifest) to node-local storage, verified by sha256.

    Every rank calls it (the folder's name is gathered); the first rank of each node copies, and
    the caller must hold a barrier afterwards.
    """
    mine = private_dir(Path(stage_dir)) if world.local_rank == 0 else None
    found = distributed.gather_objects((_node(), world.local_rank, mine and str(mine)), name="stage_dir")
    target = mine or _node_folder(found, Path(stage_dir))
    if world.local_rank != 0:
        return shards.at(target)
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
