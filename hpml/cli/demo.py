"""`hpml demo`: the whole pipeline on this machine, each stage exactly as a user runs it.

synthetic corpus (or --data) -> COVIDx split -> MPI preprocessing -> Horovod training ->
evaluation on val and test. Stages run as `mpirun -np N hpml ...` subprocesses, so the demo
exercises the real launcher; every stage resumes, so a rerun reuses what is finished.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hpml.parallel.mpi import mpirun_env

_PACKAGE = Path(__file__).resolve().parents[1]  # hpml/


def default_config() -> Path:
    """configs/demo.yaml: the checkout's, or the copy setup.py's build step puts in hpml/_jobfiles/configs/
    (a wheel, `pip install .`, the container)."""
    checkout = _PACKAGE.parent / "configs" / "demo.yaml"
    return checkout if checkout.is_file() else _PACKAGE / "_jobfiles" / "configs" / "demo.yaml"


def _stage(number: int, total: int, title: str, args: list[str], ranks: int = 0) -> None:
    cmd = [sys.executable, "-m", "hpml.cli", *args]
    if ranks:
        cmd = ["mpirun", "-np", str(ranks), *cmd]
    shown = (["mpirun", "-np", str(ranks)] if ranks else []) + ["hpml", *args]
    print(f"\n=== [{number}/{total}] {title}\n$ {' '.join(shown)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, env=mpirun_env())
    if proc.returncode != 0:
        raise SystemExit(f"hpml demo: stage '{title}' failed with exit code {proc.returncode}")
    print(f"=== [{number}/{total}] done in {time.monotonic() - start:.0f}s", flush=True)


def source_dirs(data: Path) -> list[Path]:
    """Every sub-folder is a source; `covidx build` names any that matches no layout."""
    if not data.is_dir():
        raise SystemExit(f"hpml demo: --data {data}: not a folder")
    return sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))


def demo(out: Path, ranks: int, data: Path | None, config: Path | None, overrides: list[str], per_class: int) -> int:
    config = config or default_config()
    out = out.resolve()
    split, shards, run = out / "split", out / "shards", out / "run"
    sets = ["--config", str(config)] + [a for o in overrides for a in ("--set", o)]
    sets += ["--set", f"data.split_dir={split}", "--set", f"data.shards={shards}"]
    started = time.monotonic()
    if data is None:
        raw = out / "raw"
        if (raw / ".complete").is_file():
            print(f"=== [1/6] synthetic corpus: reusing {raw}")
        else:
            _stage(1, 6, "generate a synthetic raw corpus", ["synth", "--out", str(raw), "--per-class", str(per_class)])
            (raw / ".complete").write_text("ok\n")
        sources = source_dirs(raw)
    else:
        sources = source_dirs(data)
        print(f"=== [1/6] real sources: {', '.join(map(str, sources))}")
    _stage(
        2, 6, "build the COVIDx split", ["covidx", "build", "--sources", *map(str, sources), "--out", str(split), *sets]
    )
    _stage(3, 6, f"preprocess to TFRecord shards on {ranks} MPI ranks", ["preprocess", *sets], ranks)
    _stage(4, 6, f"train with Horovod on {ranks} ranks", ["train", "--run-dir", str(run), *sets], ranks)
    _stage(5, 6, "evaluate on the validation split", ["evaluate", "--run-dir", str(run), "--split", "val"], ranks)
    _stage(6, 6, "evaluate on the test split", ["evaluate", "--run-dir", str(run), "--split", "test"], ranks)
    print(f"\nhpml demo finished in {time.monotonic() - started:.0f}s. Where things are:")
    places = {
        "split files": split,
        "shards + manifest": shards,
        "run (config, history)": run,
        "checkpoints": run / "checkpoints",
        "training curves": run / "curves.png",
        "val report": run / "eval/val/report.md",
        "test report": run / "eval/test/report.md",
    }
    for what, path in places.items():
        print(f"  {what:<22} {path}")
    print(f"Predict on files: hpml predict --run-dir {run} FILE_OR_DIR...")
    return 0
