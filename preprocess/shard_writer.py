"""One rank's TFRecord shards for one split, written crash-safe and resumable.

A shard is written under a hidden temporary name; its journal entry (.journal/<shard>.json:
items, counts, bytes, sha256, config hash) is written atomically, and only then is the shard
renamed to its final name. A rerun walks the same item sequence and reuses every shard whose
journal entry lists exactly the next items, under the same config, with a file whose sha256
still matches, and which skipped no image for a transient reason (file not found, I/O error):
such a shard is rewritten, so a fixed mount or a restored file gets its images in.
So a crash never leaves a shard that looks whole, and finished shards are never rewritten.

The journal is also what preprocessing owns in --out: before a temporary shard is opened its
marker `.journal/<shard>.open` is written, so a killed run's partial files are known as ours.
A file at a shard's name (or its temporary name) that the journal does not list is somebody
else's: it is never overwritten or removed (`OutputCollision` names it).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from hpml.core.config import CLASSES
from hpml.core.errors import UsageError
from hpml.core.failure import at
from hpml.core.files import file_sha256, write_json_atomic
from hpml.shards.manifest import JOURNAL
from hpml.shards.schema import shard_name
from preprocess.plan import Item

OPEN = ".open"  # .journal/<shard>.open: a temporary shard .<shard>.tmp is being written by preprocessing


class OutputCollision(UsageError):
    """A file in --out at a name preprocessing must write, which preprocessing did not write."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} is in the way: preprocessing must write a file of that name, and its journal "
            f"({path.parent / JOURNAL}) says it did not write this one. Move it away, or use another --out."
        )


def temporary(out: Path, name: str) -> Path:
    """Where shard `name` is written before it is complete."""
    return out / f".{name}.tmp"


def marker(out: Path, name: str) -> Path:
    return out / JOURNAL / f"{name}{OPEN}"


def foreign(out: Path, name: str) -> Path | None:
    """The file at shard `name` or its temporary name when preprocessing did not write it.

    A folder at the temporary name is left to the writer, which cannot open it and says so.
    """
    final, tmp = out / name, temporary(out, name)
    if os.path.lexists(final) and read_journal(out, name) is None:
        return final
    if tmp.is_symlink() or (tmp.exists() and not tmp.is_dir() and not marker(out, name).exists()):
        return tmp
    return None


def item_key(item: Item) -> str:
    return f"{item.source}/{item.filename}"


def read_journal(out: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((out / JOURNAL / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class ShardWriter:
    """Feeds records into size-limited shards `<split>-<rank>-<k>`; see module docstring."""

    def __init__(self, out: Path, split: str, rank: int, limit_bytes: int, gzip: bool, config_hash: str):
        self.out, self.split, self.rank = out, split, rank
        self.limit, self.gzip, self.config_hash = limit_bytes, gzip, config_hash
        self.index = 0
        self.entries: list[dict[str, Any]] = []  # completed shards (reused or written)
        self.reused = 0
        self._writer = None
        self._reset()

    def _reset(self) -> None:
        self._keys: list[str] = []
        self._labels: list[str] = []  # class index per record, in record order
        self._skipped: list[dict[str, str]] = []
        self._classes: Counter[str] = Counter()
        self._bytes = 0

    @property
    def name(self) -> str:
        return shard_name(self.split, self.rank, self.index, self.gzip)

    def resume(self, items: list[Item]) -> int:
        """Reuse complete shards from an earlier run; returns how many items they cover."""
        done = 0
        while True:
            entry = read_journal(self.out, self.name)
            if not entry or entry.get("config_hash") != self.config_hash:
                return done
            listed = entry["items"] + [s["item"] for s in entry["skipped"]]
            upcoming = {item_key(it) for it in items[done : done + len(listed)]}
            path = self.out / self.name
            if set(listed) != upcoming or not path.is_file() or path.stat().st_size != entry["bytes"]:
                return done
            if file_sha256(path) != entry["sha256"] or any(s.get("transient") for s in entry["skipped"]):
                return done
            self.entries.append(entry)
            self.reused += 1
            self.index += 1
            done += len(listed)

    def _open_tmp(self) -> Path:
        """The temporary shard, journalled as ours before it exists; never another's file."""
        in_the_way = foreign(self.out, self.name)
        if in_the_way is not None:
            raise OutputCollision(in_the_way)
        self._tmp = temporary(self.out, self.name)
        marker(self.out, self.name).touch()
        if not self._tmp.is_dir():
            self._tmp.unlink(missing_ok=True)  # our own partial from a killed run: start afresh
        return self._tmp

    def add(self, item: Item, record: bytes) -> None:
        if self._writer is None:
            import tensorflow as tf

            options = tf.io.TFRecordOptions(compression_type="GZIP" if self.gzip else "")
            self._writer = tf.io.TFRecordWriter(str(self._open_tmp()), options)
        self._writer.write(record)
        self._keys.append(item_key(item))
        self._labels.append(str(CLASSES.index(item.label)))
        self._classes[item.label] += 1
        self._bytes += len(record) + 16  # TFRecord framing: length, two CRCs
        if self._bytes >= self.limit:
            self.close_shard()

    def skip(self, item: Item, reason: str, rank: int, transient: bool = False) -> None:
        entry = {"item": item_key(item), "path": item.path, "reason": reason, "rank": rank}
        self._skipped.append({**entry, "transient": True} if transient else entry)

    def close_shard(self) -> None:
        """Finish the open shard (also one holding only skipped items, as an empty file)."""
        if self._writer is None and not self._skipped:
            return
        if self._writer is None:  # only skips: an empty shard keeps the journal sequence whole
            import tensorflow as tf

            self._writer = tf.io.TFRecordWriter(str(self._open_tmp()))
        at("shard_close")
        self._writer.close()  # flushes; raises on a full disk
        self._writer = None
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        entry = {
            "file": self.name,
            "split": self.split,
            "rank": self.rank,
            "count": len(self._keys),
            "classes": dict(sorted(self._classes.items())),
            "bytes": self._tmp.stat().st_size,
            "sha256": file_sha256(self._tmp),
            "items": self._keys,
            "labels": "".join(self._labels),
            "skipped": self._skipped,
            "config_hash": self.config_hash,
        }
        # Journal first, rename last: a shard under its final name always has its entry, and an
        # entry whose file is missing or differs is simply rewritten by the next run.
        if os.path.lexists(self.out / self.name) and read_journal(self.out, self.name) is None:
            raise OutputCollision(self.out / self.name)  # appeared while we wrote: not ours to replace
        write_json_atomic(self.out / JOURNAL / f"{self.name}.json", entry)
        os.replace(self._tmp, self.out / self.name)
        marker(self.out, self.name).unlink(missing_ok=True)
        self.entries.append(entry)
        self.index += 1
        self._reset()
