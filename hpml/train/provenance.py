"""What a run directory records about the software that produced it: RUN/versions.json."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "hpml",
    "tensorflow-cpu",
    "tensorflow",
    "horovod",
    "numpy",
    "mpi4py",
    "opencv-python-headless",
    "pydicom",
    "scikit-learn",
    "pandas",
)


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": found,
        "git_commit": commit or None,
    }


def write_versions(path: Path) -> None:
    path.write_text(json.dumps(versions(), indent=1) + "\n")
