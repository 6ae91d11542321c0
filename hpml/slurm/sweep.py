"""Hyper-parameter sweeps as one SLURM job array: a grid of config overrides, one point per task.

SWEEP/sweep.json       the base config, the grid, every point's overrides, the array jobs
SWEEP/p000/ ...        one run directory per point: slurm/config.yaml (resolved), then what
                       `hpml train` writes (checkpoints, history.csv, status.json)
SWEEP/slurm/           the rendered jobs/sweep.sbatch and the task logs (%A_%a)

Every point is validated before anything is queued. Each task trains like jobs/train.sbatch:
preemption-safe and requeued task by task. Submitting the same sweep again queues only the
points that have not finished; they resume from their checkpoints.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpml.core import history
from hpml.core.config import Config, ConfigError, load_config, load_yaml, save_config
from hpml.core.runfiles import SWEEP_FILE, RunDir
from hpml.slurm.render import container_binds, render, resolved_paths, sbatch_path
from hpml.slurm.submit import Job, record

SPEC_KEYS = {"config", "set", "grid", "parallel"}
# One sweep is one job array, point i = task i. SLURM's default MaxArraySize is 1001, and "the
# maximum job array task index value will be one less than MaxArraySize" (slurm.conf(5)): tasks
# 0-1000. hpml caps every sweep there, whatever a site configures, so a grid too large is refused
# before any point is resolved or written, not by sbatch afterwards; a larger one is several sweeps.
MAX_POINTS = 1001
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class SweepSpec:
    config: str | None = None
    overrides: list[str] = field(default_factory=list)  # applied to every point
    grid: dict[str, list[Any]] = field(default_factory=dict)
    parallel: int | None = None  # tasks at once (--array=...%K)


def _values(text: str) -> list[Any]:
    """`2e-5,1e-4` -> [2e-05, 0.0001]; YAML per item, or one YAML list `[a, b]`."""
    text = text.strip()
    if text.startswith("["):
        values = yaml.safe_load(text)
    else:
        values = [yaml.safe_load(v) if v.strip() else None for v in text.split(",")]
    values = values if isinstance(values, list) else [values]
    # PyYAML reads `1e-3` (no dot) as a string; a number it is.
    return [float(v) if isinstance(v, str) and _NUMBER.match(v.strip()) else v for v in values]


def parse_grid_option(item: str) -> tuple[str, list[Any]]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip() or not text.strip():
        raise ConfigError(f"--grid {item}: expected section.key=v1,v2,...")
    return key.strip(), _values(text)


def load_spec(path: Path | None, grid_options: list[str], parallel: int | None) -> SweepSpec:
    """A sweep YAML (config, set, grid, parallel) and/or --grid options (which come last)."""
    spec = SweepSpec()
    if path:
        raw = load_yaml(path)
        unknown = set(raw) - SPEC_KEYS
        if unknown:
            raise ConfigError(
                f"{path}: unknown key(s) {', '.join(sorted(unknown))} (a sweep file has "
                f"{', '.join(sorted(SPEC_KEYS))})"
            )
        grid = raw.get("grid") or {}
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise ConfigError(f"{path}: grid: expected a mapping of section.key to a non-empty list of values")
        sets = raw.get("set") or []
        if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
            raise ConfigError(f"{path}: set: expected a list of section.key=value strings")
        spec = SweepSpec(raw.get("config"), sets, {str(k): v for k, v in grid.items()}, raw.get("parallel"))
    for item in grid_options:
        key, values = parse_grid_option(item)
        spec.grid[key] = values
    if parallel is not None:
        spec.parallel = parallel
    if not spec.grid:
        raise ConfigError("a sweep needs at least one --grid section.key=v1,v2 (or grid: in a sweep file)")
    if spec.parallel is not None and (not isinstance(spec.parallel, int) or spec.parallel < 1):
        raise ConfigError(f"parallel: expected a positive integer, got {spec.parallel!r}")
    check_size(spec.grid)
    return spec


def check_size(grid: dict[str, list[Any]]) -> int:
    """The number of points; more than MAX_POINTS (one array job's tasks) is refused."""
    n = math.prod(len(v) for v in grid.values())
    if n > MAX_POINTS:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in grid.items())
        raise ConfigError(
            f"a sweep of {n} points ({sizes}) is larger than {MAX_POINTS}, SLURM's default MaxArraySize "
            f"(array tasks 0-{MAX_POINTS - 1}): split the grid into several sweeps"
        )
    return n


def points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    check_size(grid)
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def as_overrides(point: dict[str, Any]) -> list[str]:
    return [
        f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
        for k, v in point.items()
    ]


def label(point: dict[str, Any]) -> str:
    return " ".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())


def point_dir(sweep_dir: Path, index: int) -> Path:
    return sweep_dir / f"p{index:03d}"


def resolve(spec: SweepSpec, config: Path | None, overrides: list[str]) -> list[tuple[dict, Config]]:
    """Every point's resolved config; the first bad one stops everything, naming the point."""
    base = config or (Path(spec.config) if spec.config else None)
    out = []
    for i, point in enumerate(points(spec.grid)):
        try:
            cfg = load_config(base, [*spec.overrides, *overrides, *as_overrides(point)])
        except ConfigError as exc:
            raise ConfigError(f"sweep point {i} ({label(point)}): {exc}") from None
        out.append((point, cfg))
    return out


def epochs_done(run_dir: Path) -> int:
    return len(history.read(RunDir(run_dir).history))


def array_spec(indices: list[int], parallel: int | None) -> str:
    """[0, 1, 2, 5] -> `0-2,5`, plus `%K` when fewer tasks may run at once."""
    parts, run = [], []
    for i in sorted(indices):
        if run and i != run[-1] + 1:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    spec = ",".join(parts)
    return f"{spec}%{parallel}" if parallel and parallel < len(indices) else spec


def prepare(sweep_dir: Path, resolved: list[tuple[dict, Config]], spec: SweepSpec, cost: dict) -> list[int]:
    """Write sweep.json and each point's config; return the indices still to train."""
    manifest_path = sweep_dir / SWEEP_FILE
    wanted = [as_overrides(p) for p, _ in resolved]
    entries = [
        {"index": i, "overrides": o, "label": label(p)}
        for i, (p, o) in enumerate(zip(points(spec.grid), wanted, strict=True))
    ]
    manifest = {
        "grid": spec.grid,
        "set": spec.overrides,
        "points": entries,
        "submissions": [],
        "cost": cost,
        "epochs": {str(i): cfg.train.epochs for i, (_, cfg) in enumerate(resolved)},
    }
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if [p["overrides"] for p in old["points"]] != wanted:
            raise ConfigError(
                f"{manifest_path}: holds a different sweep ({len(old['points'])} points); " "use a new --run-dir"
            )
        manifest["submissions"] = old.get("submissions", [])
    todo = []
    for i, (_, cfg) in enumerate(resolved):
        run = point_dir(sweep_dir, i)
        config = RunDir(run).slurm / "config.yaml"
        if config.is_file() and load_config(config).to_dict() != cfg.to_dict():
            raise ConfigError(f"{config}: differs from this sweep's point {i}; use a new --run-dir")
        config.parent.mkdir(parents=True, exist_ok=True)
        save_config(cfg, config)
        if epochs_done(run) < cfg.train.epochs:
            todo.append(i)
    write_manifest(sweep_dir, manifest)
    return todo


def write_manifest(sweep_dir: Path, manifest: dict) -> None:
    path = sweep_dir / SWEEP_FILE
    tmp = path.with_name(f".{SWEEP_FILE}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(path)


def record_submission(sweep_dir: Path, array_id: str, indices: list[int]) -> None:
    """In sweep.json, and as each point's own train job (so `hpml status POINT` works too)."""
    manifest = json.loads((sweep_dir / SWEEP_FILE).read_text())
    manifest["submissions"].append({"array": array_id, "indices": indices})
    write_manifest(sweep_dir, manifest)
    for i in indices:
        record(point_dir(sweep_dir, i), {"train": f"{array_id}_{i}"}, kind="sweep point")


def task_ids(sweep_dir: Path) -> dict[int, str]:
    """Each point's latest array task (`<array id>_<index>`)."""
    manifest = json.loads((sweep_dir / SWEEP_FILE).read_text())
    ids: dict[int, str] = {}
    for sub in manifest.get("submissions", []):
        for i in sub["indices"]:
            ids[i] = f"{sub['array']}_{i}"
    return ids


def plan(spec: SweepSpec, config: Path | None, overrides: list[str], profile, sweep_dir: Path):
    """Validate every point, write the sweep, render the array script -> (Job or None, todo)."""
    resolved = resolve(spec, config, overrides)
    sweep_dir = sweep_dir.resolve()
    sbatch_path(RunDir(sweep_dir).slurm, "--run-dir")  # the task logs' directory: refused before mkdir
    RunDir(sweep_dir).slurm.mkdir(parents=True, exist_ok=True)
    cost = {
        "profile": profile.name,
        "gpus_per_node": profile.gpus_per_node,
        "sbu_per_gpu_hour": profile.sbu_per_gpu_hour,
        "sbu_per_cpu_hour": profile.sbu_per_cpu_hour,
    }
    todo = prepare(sweep_dir, resolved, spec, cost)
    if not todo:
        return None, todo
    paths = [p for i, (_, cfg) in enumerate(resolved) for p in resolved_paths(cfg, point_dir(sweep_dir, i))]
    script = RunDir(sweep_dir).slurm / "sweep.sbatch"
    array = array_spec(todo, spec.parallel)
    script.write_text(render("sweep", profile, RunDir(sweep_dir).slurm, container_binds([sweep_dir, *paths]), array))
    return Job("sweep", script, [str(sweep_dir)]), todo
