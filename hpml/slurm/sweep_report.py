"""`hpml sweep report SWEEP`: one table of the points (Markdown + CSV) and their learning curves.

Per point: its overrides, state, epochs done, the best value of the chosen metric and the
epoch it came at (by default the runs' `train.monitor`, with the rule that chose their best.h5:
hpml.core.best_epoch), the best val_loss and val_accuracy, and what it used (GPU- or CPU-hours from
the ranks' own records, hpml.slurm.usage; SBU where the cluster profile gives a rate).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hpml.core import history
from hpml.core.best_epoch import REPORTABLE, best_row
from hpml.core.config import ConfigError, load_config
from hpml.core.runfiles import SWEEP_FILE, RunDir
from hpml.slurm import usage
from hpml.slurm.sweep import point_dir, task_ids

METRICS = tuple(REPORTABLE)


def _history(run_dir: Path) -> list[dict]:
    return history.read(RunDir(run_dir).history)


def monitor_of(sweep_dir: Path, points: list[dict]) -> str:
    """The points' train.monitor (the metric their best.h5 was chosen by); they must agree."""
    found = set()
    for p in points:
        config = RunDir(point_dir(sweep_dir, p["index"])).config
        if config.is_file():
            found.add(load_config(config).train.monitor)
    if len(found) > 1:
        raise ConfigError(
            f"{sweep_dir}: the points monitor different metrics ({', '.join(sorted(found))}): give --metric"
        )
    return found.pop() if found else "val_loss"


def _state(run_dir: Path, job: str | None, epochs: int, done: int, query) -> str:
    if job and query:
        info = query(job)
        if info.state != "UNKNOWN":
            return info.state + (f" ({info.restarts} restart{'s' * (info.restarts != 1)})" if info.restarts else "")
    return "done" if done >= epochs else ("partial" if done else "not started")


def rows(sweep_dir: Path, metric: str | None, query=None) -> tuple[str, list[dict]]:
    """(the metric used, one row per point, best first)."""
    manifest = json.loads((sweep_dir / SWEEP_FILE).read_text())
    metric = metric or monitor_of(sweep_dir, manifest["points"])
    if metric not in METRICS:
        raise ConfigError(f"--metric: one of {', '.join(METRICS)}")
    cost = manifest.get("cost") or {}
    jobs = task_ids(sweep_dir)
    name, higher_is_better = REPORTABLE[metric]
    out = []
    for p in manifest["points"]:
        run = point_dir(sweep_dir, p["index"])
        hist = _history(run)
        epochs = int(manifest.get("epochs", {}).get(str(p["index"]), 0)) or len(hist)
        row: dict = {"point": p["index"], **dict(o.split("=", 1) for o in p["overrides"])}
        row["state"] = _state(run, jobs.get(p["index"]), epochs, len(hist), query)
        row["epochs"] = f"{len(hist)}/{epochs}"
        best = best_row(metric, hist)
        row[f"best_{metric}"] = best[name] if best else None
        row["best_epoch"] = int(best["epoch"]) if best else None
        row["min_val_loss"] = min((h["val_loss"] for h in hist if "val_loss" in h), default=None)
        row["max_val_accuracy"] = max((h["val_accuracy"] for h in hist if "val_accuracy" in h), default=None)
        used = usage.totals(usage.load(run))
        row["gpu_hours"], row["cpu_hours"] = used["gpu_hours"], used["cpu_hours_allocated"]
        rate_gpu, rate_cpu = cost.get("sbu_per_gpu_hour"), cost.get("sbu_per_cpu_hour")
        if used["gpu_hours"] and rate_gpu:
            row["sbu"] = round(used["gpu_hours"] * rate_gpu, 2)
        elif not used["gpu_hours"] and rate_cpu:
            row["sbu"] = round(used["cpu_hours_allocated"] * rate_cpu, 2)
        else:
            row["sbu"] = None
        out.append(row)
    key = f"best_{metric}"
    scored_rows = sorted((r for r in out if r[key] is not None), key=lambda r: r[key], reverse=higher_is_better)
    return metric, scored_rows + [r for r in out if r[key] is None]


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write(sweep_dir: Path, table: list[dict], metric: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in table for k in r))
    with (out / "report.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(table)
    lines = [
        f"# Sweep {sweep_dir.name}: {len(table)} points, sorted by best {metric}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in table]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    paths = [out / "report.md", out / "report.csv"]
    if any(_history(point_dir(sweep_dir, r["point"])) for r in table):
        paths.append(curves(sweep_dir, table, out / "curves.png"))
    return paths


def curves(sweep_dir: Path, table: list[dict], path: Path) -> Path:
    """Learning curves side by side: one column per point (best first), loss above accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(table)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 5.5), sharey="row", squeeze=False)
    for col, row in enumerate(table):
        hist = _history(point_dir(sweep_dir, row["point"]))
        epochs = [h["epoch"] for h in hist]
        for r, (train, val) in enumerate((("loss", "val_loss"), ("accuracy", "val_accuracy"))):
            ax = axes[r][col]
            ax.plot(epochs, [h.get(train) for h in hist], label=train)
            ax.plot(epochs, [h.get(val) for h in hist], label=val)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if col == 0:
                ax.legend(fontsize=7)
        title = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in row.items() if "." in k)
        axes[0][col].set_title(f"p{row['point']:03d}\n{title}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
