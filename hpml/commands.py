"""What each `hpml` subcommand does with its parsed arguments (hpml.cli builds the parser).

Stage modules are imported inside each command, so `hpml --help` and `hpml config show`
answer at once instead of paying TensorFlow's import time.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hpml.config import ConfigError, load_config
from hpml.logs import setup_logging


def cmd_config_show(args: argparse.Namespace) -> int:
    print(load_config(args.config, args.overrides).to_yaml(), end="")
    return 0


def cmd_covidx_build(args: argparse.Namespace) -> int:
    from preprocess.covidx import BuildOptions, build, summary_table

    cfg = load_config(args.config, args.overrides)
    sources = args.sources or [Path(s) for s in cfg.data.sources]
    out = args.out or (Path(cfg.data.split_dir) if cfg.data.split_dir else None)
    if not sources or out is None:
        raise ConfigError("covidx build needs --sources (or data.sources) and --out (or data.split_dir)")
    cache = {"hash_cache": args.hash_cache} if args.hash_cache else {}
    options = BuildOptions(args.seed, args.val_fraction, args.test_fraction, args.test_per_class,
                           labels=args.labels, test_list=args.test_list, drop_duplicates=args.drop_duplicates,
                           workers=args.workers, **cache)  # fmt: skip
    meta = build(sources, out, options)
    print(summary_table(meta))
    print(f"split written to {out} (details, skipped rows and reasons: {out / 'split.json'})")
    return 0


def cmd_covidx_import(args: argparse.Namespace) -> int:
    from preprocess.covidx import BuildOptions, import_published, summary_table

    options = BuildOptions(seed=args.seed, val_fraction=args.val_fraction)
    meta = import_published(args.train_file, args.test_file, args.train_images, args.test_images, args.out, options,
                            binary=args.binary)  # fmt: skip
    print(summary_table(meta))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from preprocess.synth import synth

    counts = synth(args.out, args.per_class, args.seed)
    for source, n in counts.items():
        print(f"{n:6d}  {args.out / source}")
    print(f"{sum(counts.values()):6d}  images; build a split with: "
          f"hpml covidx build --sources {args.out}/* --out SPLITDIR")  # fmt: skip
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from hpml.logs import setup_logging
    from hpml.world import mpi_world
    from preprocess.run import run

    setup_logging(mpi_world(), logging.DEBUG if args.verbose else logging.INFO)
    cfg = load_config(args.config, args.overrides)
    split_dir = args.split_dir or _required(cfg.data.split_dir, "--split-dir", "data.split_dir")
    out = args.out or _required(cfg.data.shards, "--out", "data.shards")
    return run(cfg, Path(split_dir), Path(out), force=args.force)


def cmd_shards_verify(args: argparse.Namespace) -> int:
    from preprocess.verify import verify

    problems = verify(args.shard_dir)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"{args.shard_dir}: {len(problems)} problem(s)")
        return 1
    print(f"{args.shard_dir}: all shards match the manifest")
    return 0


def cmd_bench_preprocess(args: argparse.Namespace) -> int:
    from preprocess.bench import bench

    cfg = load_config(args.config, args.overrides)
    split_dir = args.split_dir or _required(cfg.data.split_dir, "--split-dir", "data.split_dir")
    bench(cfg, Path(split_dir), args.ranks, args.config, args.overrides)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from hpml import preemption

    preemption.install_handlers()  # before TensorFlow's import: an early USR1/TERM is kept, not fatal
    from dataclasses import replace

    from hpml import distributed, placement, usage
    from hpml.train import train

    world = distributed.init()  # first: every later failure then ends all ranks (hpml.failure)
    setup_logging(world, logging.DEBUG if args.verbose else logging.INFO)
    cfg = load_config(args.config, args.overrides)
    cfg = replace(cfg, data=replace(cfg.data, stage_dir=placement.expand_stage_dir(cfg.data.stage_dir)))
    shards = args.shards or _required(cfg.data.shards, "--shards", "data.shards")
    logging.getLogger("hpml.placement").info(placement.report())
    code = 1
    try:
        code = train(cfg, Path(shards), args.run_dir, restart=args.restart)
        return code
    finally:  # what this rank used, for `hpml efficiency` and the sweep report (any cluster)
        usage.record(args.run_dir, world.rank, code, _gpus_in_use())


def _gpus_in_use() -> int:
    import tensorflow as tf

    return len(tf.config.list_logical_devices("GPU"))


def cmd_bench_input(args: argparse.Namespace) -> int:
    from hpml.bench_input import bench
    from preprocess.plan import read_items

    cfg = load_config(args.config, args.overrides)
    shards = args.shards or _required(cfg.data.shards, "--shards", "data.shards")
    split_dir = args.split_dir or _required(cfg.data.split_dir, "--split-dir", "data.split_dir")
    originals = [it.path for it in read_items(Path(split_dir), ["train"]) if it.size > 0]
    bench(cfg, Path(shards), originals, args.limit)
    return 0


def cmd_bench_loop(args: argparse.Namespace) -> int:
    from hpml import distributed
    from hpml.bench_loop import bench

    setup_logging(distributed.init(), logging.DEBUG if args.verbose else logging.INFO)
    cfg = load_config(args.config, args.overrides)
    shards = args.shards or _required(cfg.data.shards, "--shards", "data.shards")
    bench(cfg, Path(shards), args.steps, args.rounds, args.json)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args)
    if args.run_dir is None:
        raise ConfigError("evaluate needs --run-dir RUN (or --compare RUN_A RUN_B)")
    from hpml import distributed
    from hpml.evaluate import evaluate

    setup_logging(distributed.init(), logging.DEBUG if args.verbose else logging.INFO)
    evaluate(args.run_dir, args.split, args.checkpoint, args.shards, args.overrides)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from hpml.compare import CompareError, compare, markdown, write

    run_a, run_b = args.compare
    cfg = load_config(run_a / "config.yaml" if (run_a / "config.yaml").is_file() else args.config, args.overrides)
    split = args.split or cfg.eval.split
    try:
        result = compare(run_a, run_b, split, cfg.eval.bootstrap_resamples, cfg.eval.bootstrap_seed)
    except CompareError as exc:
        raise ConfigError(f"evaluate --compare: {exc}") from None
    print(markdown(result), end="")
    if args.out:
        write(result, args.out)
        print(f"written: {args.out / 'compare.json'}, {args.out / 'compare.md'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from hpml.predict import predict

    explain = args.explain_dir if args.explain else None
    return predict(args.run_dir, args.files, args.checkpoint, args.csv, explain, args.explain_target)


def cmd_export(args: argparse.Namespace) -> int:
    from hpml.export import export

    print(f"exported to {export(args.run_dir, args.checkpoint, args.out)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hpml.demo import demo

    return demo(args.out, args.ranks, args.data, args.config, args.overrides, args.per_class)


def cmd_submit(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hpml.cluster import check_profile, load_profile
    from hpml.submit import plan, record, submit

    if args.what == "sweep":
        return _submit_sweep(args)
    if args.grid or args.sweep or args.parallel:
        raise ConfigError("--grid, --sweep and --parallel belong to `hpml submit sweep`")
    cfg = load_config(args.config, args.overrides)  # a bad config fails here, not in the queue
    profile = load_profile(args.cluster or cfg.cluster.profile)
    _check_inputs(cfg, args.what)
    if args.mail_user or args.mail_type:
        profile = replace(profile, mail_user=args.mail_user or profile.mail_user,
                          mail_type=args.mail_type or profile.mail_type)  # fmt: skip
        check_profile(profile, "--mail-user/--mail-type")
    jobs = plan(args.what, cfg, profile, args.run_dir, args.split)
    ids = submit(jobs, dry_run=args.dry_run)
    if ids:
        record(args.run_dir.resolve() / "slurm", ids)
    print(f"scripts, resolved config and job logs: {args.run_dir / 'slurm'}")
    return 0


def _submit_sweep(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hpml import sweep
    from hpml.cluster import check_profile, load_profile
    from hpml.submit import submit

    spec = sweep.load_spec(args.sweep, args.grid, args.parallel)
    resolved = sweep.resolve(spec, args.config, args.overrides)  # every point, before anything is queued
    for _, cfg in resolved:
        _check_inputs(cfg, "train")
    profile = load_profile(args.cluster or resolved[0][1].cluster.profile)
    if args.mail_user or args.mail_type:
        profile = replace(profile, mail_user=args.mail_user or profile.mail_user,
                          mail_type=args.mail_type or profile.mail_type)  # fmt: skip
        check_profile(profile, "--mail-user/--mail-type")
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


def cmd_sweep_report(args: argparse.Namespace) -> int:
    from hpml import slurmq, sweep_report

    table = sweep_report.rows(args.sweep_dir, args.metric, query=slurmq.query)
    paths = sweep_report.write(args.sweep_dir, table, args.metric, args.out or args.sweep_dir)
    print(paths[0].read_text(), end="")
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from hpml import runstatus

    runstatus.show(args.path, as_json=args.json, watch=args.watch)
    return 0


def cmd_efficiency(args: argparse.Namespace) -> int:
    from hpml import jobstats, runstatus, sweep

    runs = []
    if (args.path / "sweep.json").is_file():
        ids = sweep.task_ids(args.path)
        runs = [(sweep.point_dir(args.path, i), [job]) for i, job in sorted(ids.items())]
    else:
        runs = [(args.path, list(runstatus.last_submission(args.path).values()))]
    for run, jobs in runs:
        doc = jobstats.efficiency(run, jobs)
        print(jobstats.summary(run, doc))
    return 0


def _check_inputs(cfg, what: str) -> None:
    """What a queued job would only discover after waiting for its nodes."""
    if what == "train":
        shards = Path(_required(cfg.data.shards, "--set data.shards=DIR", "data.shards"))
        if not (shards / "manifest.json").is_file():
            raise ConfigError(f"data.shards: {shards}/manifest.json not found (preprocess first, or submit `pipeline`)")
    if what in ("pipeline", "preprocess"):
        split_dir = Path(_required(cfg.data.split_dir, "--set data.split_dir=DIR", "data.split_dir"))
        _required(cfg.data.shards, "--set data.shards=DIR", "data.shards")
        if not (split_dir / "train.txt").is_file():
            raise ConfigError(f"data.split_dir: {split_dir}/train.txt not found (hpml covidx build first)")
    if cfg.model.weights and not Path(cfg.model.weights).is_file():
        raise ConfigError(f"model.weights: {cfg.model.weights} not found")


def cmd_bench_scaling(args: argparse.Namespace) -> int:
    from hpml.bench_scaling import Assumptions, bench, dump

    cfg = load_config(args.config, args.overrides)
    a = Assumptions(args.device_tflops, args.intra_gbps, args.inter_gbit, args.gpus_per_node,
                    args.batch_per_gpu or cfg.train.batch_size)  # fmt: skip
    measure = None
    if args.measure:
        measure = {"size": args.measure_size, "batch": args.measure_batch or cfg.train.batch_size,
                   "rates": [float(r) for r in args.rates.split(",")], "steps": args.steps,
                   "transport": args.transport}  # fmt: skip
    results = bench(cfg, a, [int(n) for n in args.gpus.split(",")], measure)
    if args.json:
        dump(results, args.json)
    return 0


def _required(value, option: str, key: str):
    if value is None:
        raise ConfigError(f"give {option} or set {key} in the config")
    return value
