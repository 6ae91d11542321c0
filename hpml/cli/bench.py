"""Benchmark commands: `hpml bench preprocess|input|loop|scaling`.

Every measured benchmark repeats in rounds until the 95 % interval of each of its ratios
judges its printed target, or its time runs out (hpml.bench.rounds; `--max-seconds`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from hpml.cli.options import examples, required
from hpml.core.config import load_config
from hpml.core.logs import setup_logging


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    demo = "--config configs/demo.yaml"
    bench = sub.add_parser(
        "bench",
        help="measure throughput (prints images/s and ratios)",
        epilog=examples(
            f"hpml bench preprocess {demo} --split-dir split",
            f"hpml bench input {demo} --shards shards --split-dir split --limit 100",
            f"mpirun -np 2 hpml bench loop {demo} --shards shards --steps 20",
            f"hpml bench scaling {demo} --json scaling.json",
        ),
    )
    kinds = bench.add_subparsers(dest="action", required=True, metavar="WHAT")

    bp = kinds.add_parser(
        "preprocess",
        parents=[common, _rounds(600)],
        help="bare OpenCV loop vs 1 vs N ranks",
        epilog=examples(f"hpml bench preprocess {demo} --split-dir split --ranks 2"),
    )
    bp.add_argument("--split-dir", type=Path, help="the image set: a split folder (data.split_dir)")
    bp.add_argument("--ranks", type=int, default=2, help="N: the MPI ranks of the parallel measurement")
    bp.set_defaults(func=cmd_bench_preprocess)

    bi = kinds.add_parser(
        "input",
        parents=[common, _rounds(300)],
        help="seed loader vs hpml tf.data vs bare decode",
        epilog=examples(f"hpml bench input {demo} --shards shards --split-dir split --limit 100"),
    )
    bi.add_argument("--shards", type=Path, help="shard folder (data.shards)")
    bi.add_argument("--split-dir", type=Path, help="split folder of the same images (data.split_dir)")
    bi.add_argument("--limit", type=int, default=300, help="images per measurement")
    bi.set_defaults(func=cmd_bench_input)

    bl = kinds.add_parser(
        "loop",
        parents=[common, _rounds(300)],
        help="hpml train's loop vs a bare Horovod fit (mpirun)",
        epilog=examples(f"mpirun -np 2 hpml bench loop {demo} --shards shards --steps 20"),
    )
    bl.add_argument("--shards", type=Path, help="shard folder (data.shards)")
    bl.add_argument("--steps", type=int, default=100, help="steps per timed fit")
    bl.add_argument(
        "--rounds", type=int, dest="min_rounds", help=argparse.SUPPRESS
    )  # the old fixed count: a minimum now
    bl.add_argument("--json", type=Path, help="also write the numbers here")
    bl.set_defaults(func=cmd_bench_loop)

    _scaling(
        kinds.add_parser(
            "scaling",
            parents=[common],
            help="parameters, FLOPs, allreduce bytes, predicted scaling",
            epilog=examples(
                f"hpml bench scaling {demo} --json scaling.json",
                "hpml bench scaling --config configs/covidnet-resnet50v2-512.yaml --measure",
            ),
        )
    )


def _rounds(seconds: float) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("rounds (repeat until each ratio's 95 % interval judges its target)")
    g.add_argument("--min-rounds", type=int, default=3, help="rounds before any verdict")
    g.add_argument("--max-rounds", type=int, default=30, help="stop after this many rounds")
    g.add_argument("--max-seconds", type=float, default=seconds, help="stop before this many seconds")
    return parent


def _budget(args: argparse.Namespace):
    from hpml.bench.rounds import Budget

    return Budget(min_rounds=args.min_rounds or 3, max_rounds=args.max_rounds, time_limit_s=args.max_seconds)


def _scaling(bs: argparse.ArgumentParser) -> None:
    a = bs.add_argument_group("assumptions (defaults: A100, NVLink, 200 Gb/s)")
    a.add_argument("--device-tflops", type=float, default=30.0, help="achieved training TFLOPS per GPU")
    a.add_argument("--intra-gbps", type=float, default=200.0, help="GB/s allreduce bus bandwidth inside a node")
    a.add_argument("--inter-gbit", type=float, default=200.0, help="Gb/s network per node")
    a.add_argument("--gpus-per-node", type=int, default=4, help="GPUs that share a node's fast link")
    a.add_argument("--batch-per-gpu", type=int, help="images per GPU per step (default: train.batch_size)")
    bs.add_argument("--gpus", default="1,2,4,8,16,32,64", help="GPU counts to predict")
    m = bs.add_argument_group("--measure: real steps on a shaped 2-node network on this machine (root)")
    m.add_argument("--measure", action="store_true", help="check the model against measured steps and allreduces")
    m.add_argument("--rates", default="0.5,1", help="link rates in Gbit/s per direction")
    m.add_argument(
        "--measure-size",
        type=int,
        default=224,
        help="image size of the measured steps (CPU-sized; big enough for compute to hide gap's allreduce)",
    )
    m.add_argument("--measure-batch", type=int, help="per-rank batch of the measured steps (default: train.batch_size)")
    m.add_argument("--steps", type=int, default=3, help="timed steps per configuration (the median is reported)")
    m.add_argument("--transport", choices=["mpi", "gloo"], default="mpi", help="what Horovod allreduces with")
    bs.add_argument("--no-measure", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for scripts
    bs.add_argument("--json", type=Path, help="also write the numbers here")
    bs.set_defaults(func=cmd_bench_scaling)


def bench_config(args: argparse.Namespace):
    """The experiment's config with random weights: speed does not depend on them, and a benchmark
    must run where `hpml weights fetch` has not (a laptop, CI)."""
    cfg = load_config(args.config, args.overrides)
    return replace(cfg, model=replace(cfg.model, weights=None, init_from=None))


def cmd_bench_preprocess(args: argparse.Namespace) -> int:
    from hpml.bench.preprocess import Request, bench

    cfg = bench_config(args)
    split_dir = args.split_dir or required(cfg.data.split_dir, "--split-dir", "data.split_dir")
    bench(cfg, Request(Path(split_dir), args.ranks, args.config, tuple(args.overrides)), _budget(args))
    return 0


def cmd_bench_input(args: argparse.Namespace) -> int:
    from hpml.bench.input_pipeline import bench
    from hpml.shards.shardset import ShardSet
    from preprocess.plan import read_items

    cfg = bench_config(args)
    shards = ShardSet.open(args.shards or required(cfg.data.shards, "--shards", "data.shards"))
    split_dir = args.split_dir or required(cfg.data.split_dir, "--split-dir", "data.split_dir")
    originals = [it.path for it in read_items(Path(split_dir), ["train"]) if it.size > 0]
    bench(cfg, shards, originals, args.limit, _budget(args))
    return 0


def cmd_bench_loop(args: argparse.Namespace) -> int:
    from hpml.bench.train_loop import bench
    from hpml.parallel import distributed
    from hpml.shards.shardset import ShardSet

    setup_logging(distributed.init(), logging.DEBUG if args.verbose else logging.INFO)
    cfg = bench_config(args)
    shards = ShardSet.open(args.shards or required(cfg.data.shards, "--shards", "data.shards"))
    bench(cfg, shards, args.steps, _budget(args), args.json)
    return 0


def cmd_bench_scaling(args: argparse.Namespace) -> int:
    from hpml.bench.scaling import Assumptions, bench, dump

    cfg = bench_config(args)
    batch = args.batch_per_gpu or cfg.train.batch_size
    a = Assumptions(args.device_tflops, args.intra_gbps, args.inter_gbit, args.gpus_per_node, batch)
    measure = None
    if args.measure:
        measure = {
            "size": args.measure_size,
            "batch": args.measure_batch or cfg.train.batch_size,
            "rates": [float(r) for r in args.rates.split(",")],
            "steps": args.steps,
            "transport": args.transport,
        }
    results = bench(cfg, a, [int(n) for n in args.gpus.split(",")], measure)
    if args.json:
        dump(results, args.json)
    return 0
