"""Provenance: one record per attempt of a stage, appended to a JSON-lines file, never rewritten.

A record says what ran (hpml's version and commit, every installed distribution, Python, the
TensorFlow/CUDA and Horovod builds, the MPI library, GPUs and driver, the container image), where
(host, SLURM job, array task, restart, nodes) and how (the command line, the `--set` overrides).
TensorFlow, Horovod and mpi4py are only asked when the process has already imported them: this
module imports none of them, so the light install (login nodes) records what it has.

`append` adds a record to a `provenance.jsonl` (hpml.core.runfiles.PROVENANCE) and logs a WARNING
naming what changed since the previous attempt of the same stage (a package upgraded between a
preemption and the requeue).
`upstream` is a data source's version for split.json: its git commit, else a hash of its metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from hpml import __version__
from hpml.core.files import write_text_atomic
from hpml.core.jobid import job_identity

TIMEOUT = 10  # seconds for any outside command: a hung driver or launcher must not stall a stage
COMPARED = ("hpml", "python", "packages", "tensorflow", "horovod", "mpi", "container", "gpus")

log = logging.getLogger(__name__)


def _command(args: Sequence[str], cwd: Path | None = None) -> str | None:
    """stdout of a command that exited 0, else None (absent, failed, timed out)."""
    try:
        proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _git(root: Path, *args: str) -> str | None:
    return _command(["git", "-C", str(root), *args])


def hpml_build(checkout: Path | None = None) -> dict[str, Any]:
    """hpml's version and commit. A checkout's own git first (live, with a dirty flag; the order
    `hpml --version` uses, so the two never disagree), else hpml/_build.py (setup.py wrote it into
    a built wheel or container), else "unknown"."""
    checkout = checkout or Path(__file__).resolve().parents[2]
    if (checkout / ".git").exists() and (commit := _git(checkout, "rev-parse", "HEAD")):
        dirty = _git(checkout, "status", "--porcelain", "--untracked-files=no")
        return {"version": __version__, "commit": commit, "dirty": None if dirty is None else bool(dirty)}
    try:
        from hpml._build import COMMIT as commit
    except ImportError:
        commit = "unknown"
    return {"version": __version__, "commit": commit, "dirty": None}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: `Tensorflow_CPU` and `tensorflow-cpu` are one


def packages() -> list[str]:
    """Every installed distribution, `name==version`, sorted: the whole environment, not a chosen few."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(_canonical(name), dist.version)  # the first on sys.path is the one imported
    return sorted(f"{name}=={version}" for name, version in found.items())


def tensorflow_build() -> dict[str, Any] | None:
    """TensorFlow's version and CUDA/cuDNN build, only if this process already imported it."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    try:
        info = dict(tf.sysconfig.get_build_info())
    except Exception:  # a partial or broken import: record what is known
        info = {}
    keys = ("cuda_version", "cudnn_version", "is_cuda_build", "is_rocm_build")
    return {"version": getattr(tf, "__version__", None), **{k: info[k] for k in keys if k in info}}


def horovod_build() -> dict[str, Any] | None:
    """Horovod's version and the controllers and collectives it was built with, if imported."""
    hvd = sys.modules.get("horovod.tensorflow")
    if hvd is None:
        return None
    found: dict[str, Any] = {"version": getattr(sys.modules.get("horovod"), "__version__", None)}
    for name in ("mpi_built", "nccl_built", "gloo_built"):
        try:
            found[name] = getattr(hvd, name)()
        except Exception:
            found[name] = None
    return found


def mpi_library() -> str | None:
    """The MPI library: mpi4py's answer when MPI is already up, else `mpirun --version`'s first line."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        try:
            return mpi.Get_library_version().replace("\x00", "").strip().splitlines()[0]  # C string: NUL-ended
        except Exception:
            pass
    out = _command(["mpirun", "--version"]) if shutil.which("mpirun") else None
    return out.splitlines()[0] if out else None


def gpus() -> list[dict[str, str]]:
    """Each GPU's model and driver, from nvidia-smi where it exists; none otherwise."""
    if not shutil.which("nvidia-smi"):
        return []
    out = _command(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]) or ""
    rows = [line.rsplit(",", 1) for line in out.splitlines() if "," in line]
    return [{"name": name.strip(), "driver": driver.strip()} for name, driver in rows]


def container(env: Mapping[str, str]) -> dict[str, str] | None:
    """The Apptainer/Singularity image this process runs in, as the runtime sets it."""
    image = env.get("APPTAINER_CONTAINER") or env.get("SINGULARITY_CONTAINER")
    name = env.get("APPTAINER_NAME") or env.get("SINGULARITY_NAME")
    return {"image": image or name or "", "name": name or ""} if image or name else None


def slurm(env: Mapping[str, str]) -> dict[str, Any] | None:
    if not env.get("SLURM_JOB_ID"):
        return None
    return {
        "identity": job_identity(dict(env)),  # the words RUN/PREEMPTED and status.json use
        "job": env["SLURM_JOB_ID"],
        "array_job": env.get("SLURM_ARRAY_JOB_ID"),
        "array_task": env.get("SLURM_ARRAY_TASK_ID"),
        "restart": int(env.get("SLURM_RESTART_COUNT") or 0),
        "nodelist": env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
    }


def overrides_in(argv: Sequence[str]) -> list[str]:
    """The `--set KEY=VALUE` items of a command line."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--set" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--set="):
            found.append(arg[len("--set=") :])
    return found


def record(
    stage: str,
    overrides: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """This attempt of `stage`: one JSON object. TensorFlow/Horovod keys only where they are imported."""
    env = os.environ if env is None else env
    argv = list(sys.argv if argv is None else argv)
    found: dict[str, Any] = {
        "stage": stage,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "hpml": hpml_build(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": packages(),
        "mpi": mpi_library(),
        "gpus": gpus(),
        "container": container(env),
        "slurm": slurm(env),
        "argv": argv,
        "overrides": list(overrides_in(argv) if overrides is None else overrides),
    }
    for key, build in (("tensorflow", tensorflow_build()), ("horovod", horovod_build())):
        if build is not None:
            found[key] = build
    return found


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every whole record of a provenance file; a line cut short by a crash is passed over."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            found.append(item)
    return found


def _versions(names: list[str]) -> dict[str, str]:
    return dict(item.split("==", 1) for item in names if "==" in item)


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two records, in words: `numpy 1.26.3 -> 1.26.4`. A key one record
    lacks (TensorFlow not imported then) is not a change: it was not known."""
    said = []
    for key in COMPARED:
        if key not in old or key not in new or old[key] == new[key]:
            continue
        if key == "packages":
            before, after = _versions(old[key]), _versions(new[key])
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    said.append(f"{name} {before.get(name, '(absent)')} -> {after.get(name, '(absent)')}")
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            for field in sorted(set(old[key]) | set(new[key])):
                if old[key].get(field) != new[key].get(field):
                    said.append(f"{key} {field} {old[key].get(field)} -> {new[key].get(field)}")
        else:
            said.append(f"{key} {old[key]} -> {new[key]}")
    return said


def append(path: Path, rec: dict[str, Any]) -> list[str]:
    """Add `rec` as the last line of `path` (earlier lines kept byte for byte) and warn about what
    changed since the previous record of the same stage; returns those changes. Read, append,
    rename: a crash leaves the old file or the new one, on any file system (O_APPEND is not
    atomic on NFS); one writer per file (rank 0 under the run's or the output's lock)."""
    earlier = [r for r in read_records(path) if r.get("stage") == rec.get("stage")]
    rec = {**rec, "attempt": len(earlier) + 1}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    if text and not text.endswith("\n"):
        text += "\n"  # a torn last line stays a line of its own, passed over by read_records
    write_text_atomic(path, text + json.dumps(rec, sort_keys=True) + "\n")
    said = changes(earlier[-1], rec) if earlier else []
    if said:
        before = earlier[-1]
        who = (before.get("slurm") or {}).get("identity", "no SLURM job")
        log.warning(
            "%s: the software changed since attempt %s (%s, %s): %s",
            rec.get("stage"),
            before.get("attempt", len(earlier)),
            before.get("time"),
            who,
            "; ".join(said),
        )
    return said


def upstream(root: Path, files: Mapping[str, str]) -> dict[str, Any]:
    """Which version of a data source was read: the commit of the git clone it lies in (with the
    tree of the source folder itself and a dirty flag for it), else (not a clone, or its folder not
    committed) only `metadata_sha256`, a sha256 over the metadata files read (`files`: name -> sha256)."""
    listing = "".join(f"{name} {digest}\n" for name, digest in sorted(files.items()))
    found: dict[str, Any] = {
        "metadata_files": sorted(files),
        "metadata_sha256": hashlib.sha256(listing.encode()).hexdigest() if files else None,
    }
    tree = _git(root, "rev-parse", "HEAD:./")  # fails unless this very folder is committed in a clone
    if tree:
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".")
        found.update(
            git_commit=_git(root, "rev-parse", "HEAD"), git_tree=tree, git_dirty=None if dirty is None else bool(dirty)
        )
    return found
