"""Who preprocesses what: split files -> work items -> a byte-balanced share per rank.

File sizes vary 100x (a 13 kB JPEG next to a 4 MB PNG), and decode time follows bytes, so
ranks are balanced by bytes with the longest-processing-time rule, not by count. Each share
is then put in a seeded random order, so every shard mixes sources and classes (split files
are sorted by source: shards in that order would feed training one source at a time). The
plan is a pure function of the inputs: every rerun with the same rank count gets the same shards.
"""

from __future__ import annotations

import heapq
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from hpml.core.errors import SourceError
from preprocess.covidx.containment import refusal
from preprocess.splitfile import load_roots, read_split

SHARD_ORDER_SEED = 20200321  # fixed: a rerun must walk the same item sequence to reuse shards


@dataclass(frozen=True, order=True)
class Item:
    split: str
    source: str
    filename: str
    patient: str
    label: str
    path: str  # absolute
    size: int  # bytes on disk, -1 when missing (then it is skipped and reported by a rank)
    sha256: str = ""  # of the file when the split was built (split.json), "" if unknown


def read_items(split_dir: Path, splits: list[str]) -> list[Item]:
    """Every row of the split files as a work item, each a regular file inside its source root.

    `covidx build`/`import` never write a row that escapes (preprocess.covidx.containment); one
    found here was edited in by hand or planted since (a symlink), and stops the job by name.
    """
    roots = load_roots(split_dir)
    meta = _split_meta(split_dir)
    digests, outside = meta.get("sha256", {}), bool(meta.get("allow_outside_root", False))
    items = []
    for split in splits:
        for line in read_split(split_dir / f"{split}.txt"):
            root = roots.get(line.source)
            if root is None:
                raise ValueError(f"{split_dir / split}.txt: source {line.source!r} not in split.json roots")
            if why := refusal(root, line.filename, outside):
                raise SourceError(f"{split_dir / split}.txt: {why}; rebuild the split with `hpml covidx build`")
            path = root / line.filename
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1
            digest = digests.get(f"{line.source}/{line.filename}", "")
            items.append(Item(split, line.source, line.filename, line.patient, line.label, str(path), size, digest))
    return items


def _split_meta(split_dir: Path) -> dict:
    """split.json: `sha256` (`source/filename` -> digest, from `covidx build`), `allow_outside_root`."""
    try:
        meta = json.loads((split_dir / "split.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def assign(items: list[Item], ranks: int) -> list[list[Item]]:
    """Longest-processing-time first: biggest file to the least loaded rank (ties: lowest rank).

    Each rank's share comes back in a seeded random order (stable for the same inputs).
    """
    heap = [(0, r) for r in range(ranks)]
    shares: list[list[Item]] = [[] for _ in range(ranks)]
    for item in sorted(items, key=lambda it: (-max(it.size, 0), it)):
        load, rank = heapq.heappop(heap)
        shares[rank].append(item)
        heapq.heappush(heap, (load + max(item.size, 1), rank))
    return [_mixed(sorted(share)) for share in shares]


def _mixed(share: list[Item]) -> list[Item]:
    random.Random(SHARD_ORDER_SEED).shuffle(share)
    return share
