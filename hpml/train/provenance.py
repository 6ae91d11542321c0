"""What a run directory records about the software that produced it, attempt by attempt.

RUN/provenance.jsonl gets one record per attempt (hpml.core.provenance), appended and never
rewritten; a resumed attempt whose software differs from the previous one logs a WARNING naming
what changed. RUN/versions.json is kept for its readers in its old shape (python, platform,
packages as name -> version, git_commit), now of the latest attempt and of every distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpml.core import provenance
from hpml.core.files import write_json_atomic
from hpml.core.runfiles import PROVENANCE, RunDir


def versions(rec: dict[str, Any], attempts: int) -> dict[str, Any]:
    """versions.json: the old keys, from a provenance record."""
    commit = rec["hpml"]["commit"]
    return {
        "python": rec["python"],
        "platform": rec["platform"],
        "packages": dict(item.split("==", 1) for item in rec["packages"] if "==" in item),
        "git_commit": None if commit == "unknown" else commit,
        "hpml": rec["hpml"],
        "attempts": attempts,
        "provenance": PROVENANCE,  # every attempt, not only this one
    }


def write_versions(path: Path) -> list[str]:
    """Rank 0, once per attempt (after Horovod and TensorFlow are up, so their builds are known):
    append this attempt to RUN/provenance.jsonl, then rewrite `path` (RUN/versions.json).
    Returns what changed since the previous attempt (already logged as a warning)."""
    run = RunDir(path.parent)
    rec = provenance.record("train")
    changed = provenance.append(run.provenance, rec)
    write_json_atomic(path, versions(rec, len(provenance.read_records(run.provenance))))
    return changed
