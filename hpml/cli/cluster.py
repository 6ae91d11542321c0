"""SLURM commands: `hpml submit`, `hpml status`, `hpml sweep report`, `hpml efficiency`.

None of them imports TensorFlow or Horovod: they run on a login node.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import replace
from pathlib import Path

from hpml.cli.options import examples, required
from hpml.core.best_epoch import REPORTABLE
from hpml.core.config import Config, ConfigError, load_config
from hpml.core.runfiles import SWEEP_FILE, RunDir
from hpml.shards.manifest import MANIFEST
from hpml.slurm import efficiency, query, status, sweep, sweep_report
from hpml.slurm.calls import Session
from hpml.slurm.profiles import ClusterProfile, check_profile, load_profile
from hpml.slurm.submit import plan, record, submit


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    seed = "--config configs/covidnet-resnet50v2-512.yaml --set data.split_dir=split --set data.shards=shards"
    sb = sub.add_parser(
        "submit",
        parents=[common],
        help="render jobs/*.sbatch for a cluster and sbatch them",
        epilog=examples(
            f"hpml submit pipeline --cluster snellius {seed} --run-dir runs/seed --dry-run",
            f"hpml submit sweep --cluster snellius {seed} --run-dir runs/lr --grid train.lr=2e-5,1e-4",
        ),
    )
    sb.add_argument(
        "what",
        choices=["preprocess", "train", "evaluate", "pipeline", "sweep"],
        help="one stage, all three chained with --dependency=afterok, or a sweep (job array)",
    )
    sb.add_argument("--cluster", help="profile name in configs/clusters/ or a YAML path (default: cluster.profile)")
    sb.add_argument("--run-dir", type=Path, required=True, help="run folder; job scripts and logs go to RUN/slurm")
    sb.add_argument("--split", default="val", choices=["val", "test"], help="split for the evaluate job")
    sb.add_argument("--dry-run", action="store_true", help="print the scripts and sbatch lines, submit nothing")
    sb.add_argument("--mail-user", help="mail job events to this address (overrides the profile)")
    sb.add_argument("--mail-type", help="SLURM mail events, e.g. END,FAIL (overrides the profile)")
    sg = sb.add_argument_group("sweep (hpml submit sweep)")
    sg.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="SECTION.KEY=V1,V2",
        help="values to sweep (repeatable; the grid is every combination)",
    )
    sg.add_argument("--sweep", type=Path, metavar="FILE", help="sweep YAML: config, set, grid, parallel")
    sg.add_argument("--parallel", type=int, metavar="K", help="points running at once (--array=...%%K)")
    sb.set_defaults(func=cmd_submit)

    report = "hpml sweep report runs/lr --metric val_accuracy"
    sw = sub.add_parser("sweep", help="compare the points of a sweep", epilog=examples(report))
    sw_sub = sw.add_subparsers(dest="action", required=True, metavar="ACTION")
    sr = sw_sub.add_parser(
        "report", parents=[common], help="table (Markdown + CSV) and learning curves", epilog=examples(report)
    )
    sr.add_argument("sweep_dir", type=Path, metavar="SWEEP", help="the sweep folder (`hpml submit sweep --run-dir`)")
    sr.add_argument(
        "--metric",
        choices=list(REPORTABLE),
        help="rank the points by this (default: their train.monitor, the metric best.h5 was chosen by)",
    )
    sr.add_argument("--out", type=Path, help="where the table and curves go (default: SWEEP/)")
    sr.set_defaults(func=cmd_sweep_report)

    st = sub.add_parser(
        "status",
        parents=[common],
        help="SLURM state and training progress of a run or sweep",
        epilog=examples("hpml status runs/demo", "hpml status runs/lr --watch 60"),
    )
    st.add_argument("path", type=Path, metavar="RUN|SWEEP", help="a run folder or a sweep folder")
    st.add_argument("--json", action="store_true", help="print JSON (machine-readable)")
    st.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=30.0,
        metavar="SECONDS",
        help="refresh until every job has ended (default every 30 s)",
    )
    st.set_defaults(func=cmd_status)

    ef = sub.add_parser(
        "efficiency",
        parents=[common],
        help="what a run's jobs used: CPU, memory, GPU (after the fact)",
        epilog=examples("hpml efficiency runs/seed"),
    )
    ef.add_argument("path", type=Path, metavar="RUN|SWEEP", help="a run folder or a sweep folder")
    ef.set_defaults(func=cmd_efficiency)


def cmd_submit(args: argparse.Namespace) -> int:
    if args.what == "sweep":
        return _submit_sweep(args)
    if args.grid or args.sweep or args.parallel:
        raise ConfigError("--grid, --sweep and --parallel belong to `hpml submit sweep`")
    _resolve_weights(args, [load_config(args.config, args.overrides)])
    cfg = load_config(args.config, args.overrides)  # a bad config fails here, not in the queue
    profile = _profile(args, cfg)
    _check_inputs(cfg, args.what)
    ids = submit(plan(args.what, cfg, profile, args.run_dir, args.split), dry_run=args.dry_run)
    if ids:
        record(args.run_dir.resolve(), ids)
    print(f"scripts, resolved config and job logs: {args.run_dir / 'slurm'}")
    return 0


def _submit_sweep(args: argparse.Namespace) -> int:
    spec = sweep.load_spec(args.sweep, args.grid, args.parallel)
    _resolve_weights(args, [cfg for _, cfg in sweep.resolve(spec, args.config, args.overrides)])
    resolved = sweep.resolve(spec, args.config, args.overrides)  # every point, before anything is queued
    for _, cfg in resolved:
        _check_inputs(cfg, "train")
    profile = _profile(args, resolved[0][1])
    job, todo = sweep.plan(spec, args.config, args.overrides, profile, args.run_dir)
    print(f"sweep {args.run_dir}: {len(resolved)} points")
    for i, (point, _) in enumerate(resolved):
        print(f"  p{i:03d}  {sweep.label(point):<40} {'to train' if i in todo else 'finished'}")
    if job is None:
        print("every point has finished; nothing to submit")
        return 0
    ids = submit([job], dry_run=args.dry_run)
    if ids:
        sweep.record_submission(args.run_dir.resolve(), ids["sweep"], todo)
    print(
        f"points, scripts and task logs: {args.run_dir} (hpml status {args.run_dir}; hpml sweep report {args.run_dir})"
    )
    return 0


def _profile(args: argparse.Namespace, cfg: Config) -> ClusterProfile:
    """The cluster profile, with --mail-user/--mail-type applied and checked."""
    profile = load_profile(args.cluster or cfg.cluster.profile)
    if args.mail_user or args.mail_type:
        mail = {"mail_user": args.mail_user or profile.mail_user, "mail_type": args.mail_type or profile.mail_type}
        profile = replace(profile, **mail)
        check_profile(profile, "--mail-user/--mail-type")
    return profile


def _resolve_weights(args: argparse.Namespace, configs: list[Config]) -> None:
    """`model.weights: imagenet` becomes the cached file's path here, on the login node: the job's
    config names the file itself (bound into the container like any input), and a missing one
    stops the submission with the `hpml weights fetch` command to run."""
    from hpml.models.weights_cache import resolve

    backbones = sorted({c.model.backbone for c in configs if c.model.weights == "imagenet"})
    if len(backbones) > 1:
        raise ConfigError(
            f"model.weights: imagenet for several backbones ({', '.join(backbones)}): give each point's "
            "model.weights as a path (hpml weights fetch puts them in $HPML_WEIGHTS_DIR)"
        )
    if backbones:
        args.overrides = [*args.overrides, f"model.weights={resolve('imagenet', backbones[0])}"]


def _check_inputs(cfg: Config, what: str) -> None:
    """What a queued job would only discover after waiting for its nodes."""
    if what == "train":
        shards = Path(required(cfg.data.shards, "--set data.shards=DIR", "data.shards"))
        if not (shards / MANIFEST).is_file():
            raise ConfigError(f"data.shards: {shards}/{MANIFEST} not found (preprocess first, or submit `pipeline`)")
    if what in ("pipeline", "preprocess"):
        split_dir = Path(required(cfg.data.split_dir, "--set data.split_dir=DIR", "data.split_dir"))
        required(cfg.data.shards, "--set data.shards=DIR", "data.shards")
        if not (split_dir / "train.txt").is_file():
            raise ConfigError(f"data.split_dir: {split_dir}/train.txt not found (hpml covidx build first)")
    if cfg.model.weights and not Path(cfg.model.weights).is_file():
        raise ConfigError(f"model.weights: {cfg.model.weights} not found")


def cmd_sweep_report(args: argparse.Namespace) -> int:
    # One Session: a controller that stays down costs one round of retries, not one per point.
    metric, table = sweep_report.rows(
        args.sweep_dir, args.metric, query=functools.partial(query.query, run=Session().run)
    )
    paths = sweep_report.write(args.sweep_dir, table, metric, args.out or args.sweep_dir)
    print(paths[0].read_text(), end="")
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status.show(args.path, as_json=args.json, watch=args.watch)
    return 0


def cmd_efficiency(args: argparse.Namespace) -> int:
    slurm = RunDir(args.path).slurm
    if (args.path / SWEEP_FILE).is_file():
        points = sorted(sweep.task_ids(args.path).items())
        runs = [(sweep.point_dir(args.path, i), {job: slurm / "sweep.sbatch"}) for i, job in points]
    elif args.path.is_dir():
        runs = [
            (args.path, {job: slurm / f"{stage}.sbatch" for stage, job in status.last_submission(args.path).items()})
        ]
    else:
        raise FileNotFoundError(f"{args.path}: no such run or sweep directory")
    calls = Session()  # sacct unreachable for one point: not asked again for every other point
    for run, scripts in runs:
        print(efficiency.summary(run, efficiency.efficiency(run, list(scripts), scripts, run=calls.run)))
    return 0
