"""Data commands: `hpml synth`, `hpml covidx build|import`, `hpml preprocess`, `hpml shards verify`.

Stage modules are imported inside each command, so `hpml --help` answers at once instead of
paying TensorFlow's import time.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hpml.cli.options import at_least, examples, fraction, per_class, required
from hpml.core.config import ConfigError, load_config
from hpml.core.logs import setup_logging


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    syn = sub.add_parser(
        "synth",
        parents=[common],
        help="generate a raw corpus in the 5 COVIDx source layouts",
        epilog=examples("hpml synth --out raw --per-class 40", "hpml covidx build --sources raw/* --out split"),
    )
    syn.add_argument("--out", type=Path, required=True, help="folder to write: one sub-folder per source")
    syn.add_argument("--per-class", type=at_least(1), default=100, help="images per class")
    syn.add_argument("--seed", type=int, default=0, help="seed of the generated images and tables")
    syn.set_defaults(func=cmd_synth)

    covidx = sub.add_parser(
        "covidx",
        help="build the COVIDx split from the public sources",
        epilog=examples(
            "hpml covidx build --sources raw/* --out split",
            "hpml covidx import train_COVIDx.txt test_COVIDx.txt --train-images train --test-images test --out split",
        ),
    )
    actions = covidx.add_subparsers(dest="action", required=True, metavar="ACTION")
    _covidx_build(
        actions.add_parser(
            "build",
            parents=[common],
            help="scan sources, write train/val/test.txt",
            epilog=examples(
                "hpml covidx build --sources raw/* --out split",
                "hpml covidx build --sources raw/* --out split --test-per-class normal=6,pneumonia=6,COVID-19=6",
                "hpml covidx build --sources raw/* --out split --labels extended --drop-duplicates",
            ),
        )
    )
    _covidx_import(
        actions.add_parser(
            "import",
            parents=[common],
            help="use published train/test_COVIDx.txt",
            epilog=examples(
                "hpml covidx import train_COVIDx.txt test_COVIDx.txt --train-images train --test-images test "
                "--out split"
            ),
        )
    )

    pre = sub.add_parser(
        "preprocess",
        parents=[common],
        help="split files -> TFRecord shards (MPI)",
        epilog=examples("mpirun -np 2 hpml preprocess --config configs/demo.yaml --split-dir split --out shards"),
    )
    pre.add_argument("--split-dir", type=Path, help="folder with train/val/test.txt (data.split_dir)")
    pre.add_argument("--out", type=Path, help="shard folder (data.shards)")
    pre.add_argument("--force", action="store_true", help="replace shards made with other settings")
    pre.set_defaults(func=cmd_preprocess)

    shards = sub.add_parser("shards", help="inspect preprocessed shards", epilog=examples("hpml shards verify shards"))
    shards_sub = shards.add_subparsers(dest="action", required=True, metavar="ACTION")
    ver = shards_sub.add_parser(
        "verify",
        parents=[common],
        help="recompute checksums, parse every record",
        description="Recompute every shard's checksum and parse every record against the manifest. "
        "Exit 0: all shards match; 1: a problem (each printed as FAIL).",
        epilog=examples("hpml shards verify shards"),
    )
    ver.add_argument("shard_dir", type=Path, metavar="SHARD_DIR", help="a shard folder (with its manifest.json)")
    ver.set_defaults(func=cmd_shards_verify)


def _covidx_build(b: argparse.ArgumentParser) -> None:
    b.add_argument(
        "--sources",
        nargs="+",
        type=Path,
        help="source folders, each in one of the 5 COVIDx layouts: ieee8023, Actualmed, Figure1, RSNA, SIRM "
        "(docs/covidx.md); default: data.sources",
    )
    b.add_argument("--out", type=Path, help="split folder to write (default: data.split_dir)")
    b.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    b.add_argument("--val-fraction", type=fraction, default=0.1, help="share of the images for val, by patient")
    b.add_argument("--test-fraction", type=fraction, default=0.1, help="share of the images for test, by patient")
    b.add_argument(
        "--test-per-class",
        type=_test_counts,
        metavar="N|normal=N,pneumonia=N,COVID-19=N",
        help="test images per class instead of --test-fraction",
    )
    b.add_argument(
        "--labels",
        choices=["covidnet", "extended"],
        default="covidnet",
        help="label policy: covidnet = COVID-Net's create_COVIDx table; "
        "extended = hpml's broader mapping (docs/covidx.md)",
    )
    b.add_argument(
        "--test-list",
        type=Path,
        metavar="test_COVIDx*.txt",
        help="pin the test set to a published COVIDx test list (val is still carved from the rest)",
    )
    b.add_argument(
        "--drop-duplicates",
        action="store_true",
        help="keep only the first copy of a re-encoded radiograph (default: keep all, on one side)",
    )
    b.add_argument("--hash-cache", type=Path, help="fingerprint cache (default: ~/.cache/hpml/phash-v1.npz)")
    b.add_argument(
        "--workers", type=at_least(0), default=0, help="processes that decode images for fingerprints (0: automatic)"
    )
    _outside_links(b)
    b.set_defaults(func=cmd_covidx_build)


def _outside_links(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--follow-outside-links",
        action="store_true",
        help="accept symlinks that lead out of a source (images) folder; by default such rows are skipped",
    )


def _test_counts(text: str) -> dict[str, int]:
    try:
        counts = per_class(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: expected N or normal=N,pneumonia=N,COVID-19=N") from None
    if negative := {c: n for c, n in counts.items() if n < 0}:
        raise argparse.ArgumentTypeError(
            f"{text}: negative count ({', '.join(f'{c}={n}' for c, n in negative.items())})"
        )
    return counts


def _covidx_import(i: argparse.ArgumentParser) -> None:
    i.add_argument("train_file", type=Path, metavar="TRAIN_FILE", help="the published train list (train_COVIDx*.txt)")
    i.add_argument("test_file", type=Path, metavar="TEST_FILE", help="the published test list (test_COVIDx*.txt)")
    i.add_argument("--train-images", type=Path, required=True, help="folder of the train images")
    i.add_argument("--test-images", type=Path, required=True, help="folder of the test images")
    i.add_argument("--out", type=Path, required=True, help="split folder to write")
    i.add_argument("--seed", type=int, default=0, help="seed of the val patients carved from train")
    i.add_argument("--val-fraction", type=fraction, default=0.1, help="share of the train images for val, by patient")
    i.add_argument(
        "--binary",
        action="store_true",
        help="the files are binary COVIDx (positive/negative): positive -> COVID-19, negative -> normal",
    )
    _outside_links(i)
    i.set_defaults(func=cmd_covidx_import)


def cmd_synth(args: argparse.Namespace) -> int:
    from preprocess.synth.corpus import synth

    counts = synth(args.out, args.per_class, args.seed)
    for source, n in counts.items():
        print(f"{n:6d}  {args.out / source}")
    total = sum(counts.values())
    print(f"{total:6d}  images; build a split with: hpml covidx build --sources {args.out}/* --out SPLITDIR")
    return 0


def cmd_covidx_build(args: argparse.Namespace) -> int:
    from preprocess.covidx.build import build, summary_table
    from preprocess.covidx.options import BuildOptions

    cfg = load_config(args.config, args.overrides)
    sources = args.sources or [Path(s) for s in cfg.data.sources]
    out = args.out or (Path(cfg.data.split_dir) if cfg.data.split_dir else None)
    if not sources or out is None:
        raise ConfigError("covidx build needs --sources (or data.sources) and --out (or data.split_dir)")
    options = BuildOptions(
        args.seed,
        args.val_fraction,
        args.test_fraction,
        args.test_per_class,
        labels=args.labels,
        test_list=args.test_list,
        drop_duplicates=args.drop_duplicates,
        workers=args.workers,
        allow_outside_root=args.follow_outside_links,
        **({"hash_cache": args.hash_cache} if args.hash_cache else {}),
    )
    meta = build(sources, out, options)
    print(summary_table(meta))
    print(f"split written to {out} (details, skipped rows and reasons: {out / 'split.json'})")
    return 0


def cmd_covidx_import(args: argparse.Namespace) -> int:
    from preprocess.covidx.build import summary_table
    from preprocess.covidx.options import BuildOptions
    from preprocess.covidx.published import Published, import_published

    options = BuildOptions(seed=args.seed, val_fraction=args.val_fraction, allow_outside_root=args.follow_outside_links)
    train, test = Published(args.train_file, args.train_images), Published(args.test_file, args.test_images)
    print(summary_table(import_published(train, test, args.out, options, binary=args.binary)))
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from hpml.parallel.mpi import mpi_world
    from preprocess.run import run

    setup_logging(mpi_world(), logging.DEBUG if args.verbose else logging.INFO)
    cfg = load_config(args.config, args.overrides)
    split_dir = args.split_dir or required(cfg.data.split_dir, "--split-dir", "data.split_dir")
    out = args.out or required(cfg.data.shards, "--out", "data.shards")
    return run(cfg, Path(split_dir), Path(out), force=args.force)


def cmd_shards_verify(args: argparse.Namespace) -> int:
    from hpml.shards.verify import verify

    problems = verify(args.shard_dir)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"{args.shard_dir}: {len(problems)} problem(s)")
        return 1
    print(f"{args.shard_dir}: all shards match the manifest")
    return 0
