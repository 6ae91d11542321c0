"""Model commands: `hpml config show`, `hpml train`, `hpml evaluate`, `hpml predict`, `hpml export`,
`hpml demo`.

`hpml train` installs its preemption handlers before anything slow is imported; stage modules
are imported inside each command so `hpml --help` answers at once.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hpml.cli.options import examples, required
from hpml.core.config import ConfigError, load_config
from hpml.core.logs import setup_logging
from hpml.core.runfiles import RunDir
from hpml.train import preemption


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    shown = "hpml config show --config configs/covidnet-resnet50v2-512.yaml --set train.lr=1e-4"
    config = sub.add_parser("config", help="show the resolved configuration", epilog=examples(shown))
    config_sub = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = config_sub.add_parser(
        "show",
        parents=[common],
        help="print the resolved YAML",
        description="Print the configuration a command would run with: the defaults, --config, then each --set.",
        epilog=examples(shown),
    )
    show.set_defaults(func=cmd_config_show)

    tr = sub.add_parser(
        "train",
        parents=[common],
        help="Horovod data-parallel training from the shards",
        epilog=examples(
            "mpirun -np 2 hpml train --config configs/demo.yaml --shards shards --run-dir runs/demo "
            "--set train.epochs=5",
            "mpirun -np 2 hpml train --config configs/demo.yaml --shards shards --run-dir runs/demo --restart",
        ),
    )
    tr.add_argument("--shards", type=Path, help="preprocessed shard folder (data.shards)")
    tr.add_argument("--run-dir", type=Path, required=True, help="run folder; an existing one resumes")
    tr.add_argument(
        "--restart",
        action="store_true",
        help="start the run over: its checkpoints and history are kept aside, not resumed",
    )
    tr.add_argument(
        "--init-from",
        metavar="FILE",
        help="a new run starts from these weights (model.init_from: `hpml weights import` output, a best.h5, a "
        "checkpoint prefix); a resumed run ignores it",
    )
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "evaluate",
        parents=[common],
        help="exact metrics and reports for a split",
        epilog=examples(
            "mpirun -np 2 hpml evaluate --run-dir runs/demo --split val",
            "hpml evaluate --compare runs/a runs/b --split test --out compare",
        ),
    )
    ev.add_argument("--run-dir", type=Path, help="the run to evaluate (required unless --compare)")
    ev.add_argument("--split", choices=["val", "test"], help="the split (default: eval.split); test only on request")
    ev.add_argument(
        "--checkpoint",
        help="best | last | any weights file hpml can load (a .h5 of hpml or of the seed, a checkpoint prefix); "
        "default: eval.checkpoint. Without --run-dir: a file, with --config and --out",
    )
    ev.add_argument("--shards", type=Path, help="shard folder (default: data.shards of the run)")
    ev.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("RUN_A", "RUN_B"),
        help="paired comparison of two evaluated runs on the same images (McNemar, B - A)",
    )
    ev.add_argument(
        "--out",
        type=Path,
        help="with --compare: also write compare.json and compare.md here; without --run-dir: write OUT/eval/SPLIT",
    )
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser(
        "predict",
        parents=[common],
        help="classify PNG/JPEG/DICOM files",
        description="Classify PNG/JPEG/DICOM files. Exit 0: every file classified; 3: some could not be "
        "(each listed as UNREADABLE with its reason); 1: none could. From Python: hpml.api.predict.",
        epilog=examples(
            "hpml predict --run-dir runs/demo raw/covid-chestxray-dataset/images --csv predictions.csv",
            "hpml predict --run-dir runs/demo image.png --explain --explain-dir gradcam",
            "hpml predict --config configs/covidnet-resnet50v2-512.yaml --checkpoint seed-ep4.h5 image.png",
        ),
    )
    pr.add_argument("--run-dir", type=Path, help="the trained run (else --config and --checkpoint FILE)")
    pr.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE_OR_DIR",
        help="image files (PNG, JPEG, DICOM), or folders searched for .png/.jpg/.jpeg/.dcm/.dicom files",
    )
    pr.add_argument(
        "--checkpoint", help="best (default with --run-dir) | last | any weights file hpml can load (with --config)"
    )
    pr.add_argument("--csv", type=Path, help="also write the predictions here")
    pr.add_argument("--explain", action="store_true", help="write a Grad-CAM overlay PNG per file")
    pr.add_argument("--explain-dir", type=Path, default=Path("gradcam"), help="where --explain writes")
    pr.add_argument(
        "--explain-target",
        choices=["vs-normal", "logit"],
        default="vs-normal",
        help="Grad-CAM score: log-odds of the class against normal (vs-normal) or its logit",
    )
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export",
        parents=[common],
        help="SavedModel + Keras file + preprocessing contract",
        epilog=examples("hpml export --run-dir runs/demo", "hpml export --run-dir runs/demo --checkpoint last"),
    )
    ex.add_argument("--run-dir", type=Path, required=True, help="the trained run")
    ex.add_argument("--checkpoint", default="best", help="best | last | any weights file hpml can load")
    ex.add_argument("--out", type=Path, help="the export folder (default: RUN/export)")
    ex.set_defaults(func=cmd_export)

    dm = sub.add_parser(
        "demo",
        parents=[common],
        help="the whole pipeline end to end on this machine",
        epilog=examples("hpml demo --out demo-small --per-class 20 --set train.epochs=2"),
    )
    dm.add_argument("--data", type=Path, help="folder of real source folders (default: generate data)")
    dm.add_argument("--ranks", type=int, default=2, help="MPI ranks for preprocess/train/evaluate")
    dm.add_argument(
        "--out", type=Path, default=Path("demo-out"), help="folder for everything it makes; a rerun resumes"
    )
    dm.add_argument("--per-class", type=int, default=200, help="synthetic images per class")
    dm.set_defaults(func=cmd_demo)


def cmd_config_show(args: argparse.Namespace) -> int:
    print(load_config(args.config, args.overrides).to_yaml(), end="")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    preemption.install_handlers()  # before TensorFlow's import: an early USR1/TERM is kept, not fatal
    from dataclasses import replace

    from hpml.parallel import distributed, placement
    from hpml.slurm import usage
    from hpml.train.loop import train

    world = distributed.init()  # first: every later failure then ends all ranks (hpml.core.failure)
    setup_logging(world, logging.DEBUG if args.verbose else logging.INFO)
    overrides = [*args.overrides, *([f"model.init_from={args.init_from}"] if args.init_from else [])]
    cfg = load_config(args.config, overrides)
    cfg = replace(cfg, data=replace(cfg.data, stage_dir=placement.expand_stage_dir(cfg.data.stage_dir)))
    shards = args.shards or required(cfg.data.shards, "--shards", "data.shards")
    logging.getLogger(placement.__name__).info(placement.report())
    code = 1
    try:
        code = train(cfg, Path(shards), args.run_dir, restart=args.restart)
        return code
    finally:  # what this rank used, for `hpml efficiency` and the sweep report (any cluster)
        usage.record(args.run_dir, world.rank, code, distributed.gpus_in_use())


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args)
    run_dir = args.run_dir
    if run_dir is None:
        if not (args.checkpoint and args.config and args.out):
            raise ConfigError(
                "evaluate needs --run-dir RUN, or --checkpoint FILE --config CFG --out DIR (or --compare)"
            )
        run_dir = args.out  # a weights file alone: its report goes to OUT/eval/SPLIT
    from hpml.evaluation.evaluate import evaluate
    from hpml.parallel import distributed

    setup_logging(distributed.init(), logging.DEBUG if args.verbose else logging.INFO)
    evaluate(run_dir, args.split, args.checkpoint, args.shards, args.overrides, args.config)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from hpml.evaluation.compare import CompareError, compare, markdown, write

    run_a, run_b = args.compare
    config = RunDir(run_a).config
    cfg = load_config(config if config.is_file() else args.config, args.overrides)
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
    from hpml.serve.predict import predict

    if args.run_dir is None and not (args.config and args.checkpoint):
        raise ConfigError("predict needs --run-dir RUN, or --config CFG with --checkpoint FILE")
    explain = args.explain_dir if args.explain else None
    which = args.checkpoint or "best"
    return predict(args.run_dir, args.files, which, args.csv, explain, args.explain_target, args.config, args.overrides)


def cmd_export(args: argparse.Namespace) -> int:
    from hpml.serve.export import export

    print(f"exported to {export(args.run_dir, args.checkpoint, args.out)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hpml.cli.demo import demo

    return demo(args.out, args.ranks, args.data, args.config, args.overrides, args.per_class)
