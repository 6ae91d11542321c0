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
    options = BuildOptions(args.seed, args.val_fraction, args.test_fraction, args.test_per_class)
    meta = build(sources, out, options)
    print(summary_table(meta))
    print(f"split written to {out} (details, skipped rows and reasons: {out / 'split.json'})")
    return 0


def cmd_covidx_import(args: argparse.Namespace) -> int:
    from preprocess.covidx import BuildOptions, import_published, summary_table

    options = BuildOptions(seed=args.seed, val_fraction=args.val_fraction)
    meta = import_published(args.train_file, args.test_file, args.train_images, args.test_images, args.out, options)
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

    cfg = load_config(args.config, args.overrides)
    setup_logging(mpi_world(), logging.DEBUG if args.verbose else logging.INFO)
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
    from hpml import distributed
    from hpml.train import train

    cfg = load_config(args.config, args.overrides)
    shards = args.shards or _required(cfg.data.shards, "--shards", "data.shards")
    world = distributed.init()
    setup_logging(world, logging.DEBUG if args.verbose else logging.INFO)
    return train(cfg, Path(shards), args.run_dir)


def cmd_bench_input(args: argparse.Namespace) -> int:
    from hpml.bench_input import bench
    from preprocess.plan import read_items

    cfg = load_config(args.config, args.overrides)
    shards = args.shards or _required(cfg.data.shards, "--shards", "data.shards")
    split_dir = args.split_dir or _required(cfg.data.split_dir, "--split-dir", "data.split_dir")
    originals = [it.path for it in read_items(Path(split_dir), ["train"]) if it.size > 0]
    bench(cfg, Path(shards), originals, args.limit)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hpml import distributed
    from hpml.evaluate import evaluate

    setup_logging(distributed.init(), logging.DEBUG if args.verbose else logging.INFO)
    evaluate(args.run_dir, args.split, args.checkpoint, args.shards, args.overrides)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from hpml.predict import predict

    return predict(args.run_dir, args.files, args.checkpoint, args.csv)


def cmd_export(args: argparse.Namespace) -> int:
    from hpml.export import export

    print(f"exported to {export(args.run_dir, args.checkpoint, args.out)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hpml.demo import demo

    return demo(args.out, args.ranks, args.data, args.config, args.overrides, args.per_class)


def cmd_submit(args: argparse.Namespace) -> int:
    from hpml.cluster import load_profile
    from hpml.slurm import plan, submit

    cfg = load_config(args.config, args.overrides)  # a bad config fails here, not in the queue
    profile = load_profile(args.cluster or cfg.cluster.profile)
    jobs = plan(args.what, cfg, profile, args.run_dir, args.split)
    submit(jobs, dry_run=args.dry_run)
    print(f"scripts, resolved config and job logs: {args.run_dir / 'slurm'}")
    return 0


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
