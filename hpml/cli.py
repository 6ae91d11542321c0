"""`hpml <command>`: argument parsing and dispatch only; nothing imports this module.

The commands themselves are in hpml.commands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hpml import commands, failure
from hpml.logs import setup_logging

log = logging.getLogger("hpml.cli")


def _config_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("configuration")
    group.add_argument("--config", type=Path, help="experiment YAML (configs/*.yaml)")
    group.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set train.lr=1e-4",
    )  # fmt: skip
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parent


def _per_class(text: str) -> dict[str, int]:
    from hpml.config import CLASSES

    if "=" not in text:
        return {c: int(text) for c in CLASSES}
    out = {}
    for item in text.split(","):
        name, _, n = item.partition("=")
        if name not in CLASSES:
            raise argparse.ArgumentTypeError(f"unknown class {name!r} (classes: {', '.join(CLASSES)})")
        out[name] = int(n)
    return out


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _config_parent()
    parser = argparse.ArgumentParser(
        prog="hpml",
        description="COVID-19 chest X-ray classification on SLURM clusters with MPI and Horovod.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config = sub.add_parser("config", help="show the resolved configuration")
    config_sub = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", parents=[common], help="print the resolved YAML")
    show.set_defaults(func=commands.cmd_config_show)

    covidx = sub.add_parser("covidx", help="build the COVIDx split from the public sources")
    covidx_sub = covidx.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = covidx_sub.add_parser("build", parents=[common], help="scan sources, write train/val/test.txt")
    b.add_argument("--sources", nargs="+", type=Path, help="source folders (any of the 4 layouts)")
    b.add_argument("--out", type=Path, help="split folder to write")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--val-fraction", type=_fraction, default=0.1)
    b.add_argument("--test-fraction", type=_fraction, default=0.1)
    b.add_argument("--test-per-class", type=_per_class, metavar="N|normal=N,pneumonia=N,COVID-19=N",
                   help="test images per class instead of --test-fraction")  # fmt: skip
    b.add_argument("--labels", choices=["covidnet", "extended"], default="covidnet",
                   help="label policy: covidnet = COVID-Net's create_COVIDx table (default); "
                   "extended = hpml's broader mapping (README: COVIDx label policies)")  # fmt: skip
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
    b.add_argument("--hash-cache", type=Path, help="fingerprint cache (default ~/.cache/hpml/phash-v1.npz)")
    b.add_argument("--workers", type=int, default=0, help="processes that decode images for fingerprints")
    b.set_defaults(func=commands.cmd_covidx_build)
    i = covidx_sub.add_parser("import", parents=[common], help="use published train/test_COVIDx.txt")
    i.add_argument("train_file", type=Path)
    i.add_argument("test_file", type=Path)
    i.add_argument("--train-images", type=Path, required=True, help="folder of the train images")
    i.add_argument("--test-images", type=Path, required=True, help="folder of the test images")
    i.add_argument("--out", type=Path, required=True)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--val-fraction", type=_fraction, default=0.1)
    i.add_argument(
        "--binary",
        action="store_true",
        help="the files are binary COVIDx (positive/negative): positive -> COVID-19, negative -> normal",
    )
    i.set_defaults(func=commands.cmd_covidx_import)

    pre = sub.add_parser("preprocess", parents=[common], help="split files -> TFRecord shards (MPI)")
    pre.add_argument("--split-dir", type=Path, help="folder with train/val/test.txt (data.split_dir)")
    pre.add_argument("--out", type=Path, help="shard folder (data.shards)")
    pre.add_argument("--force", action="store_true", help="replace shards made with other settings")
    pre.set_defaults(func=commands.cmd_preprocess)

    shards = sub.add_parser("shards", help="inspect preprocessed shards")
    shards_sub = shards.add_subparsers(dest="action", required=True, metavar="ACTION")
    ver = shards_sub.add_parser("verify", parents=[common], help="recompute checksums, parse every record")
    ver.add_argument("shard_dir", type=Path)
    ver.set_defaults(func=commands.cmd_shards_verify)

    tr = sub.add_parser("train", parents=[common], help="Horovod data-parallel training from the shards")
    tr.add_argument("--shards", type=Path, help="preprocessed shard folder (data.shards)")
    tr.add_argument("--run-dir", type=Path, required=True, help="run folder; an existing one resumes")
    tr.add_argument("--restart", action="store_true",
                    help="start the run over: its checkpoints and history are kept aside, not resumed")  # fmt: skip
    tr.set_defaults(func=commands.cmd_train)

    ev = sub.add_parser("evaluate", parents=[common], help="exact metrics and reports for a split")
    ev.add_argument("--run-dir", type=Path, help="the run to evaluate (required unless --compare)")
    ev.add_argument("--split", choices=["val", "test"], help="default: eval.split (val); test only on request")
    ev.add_argument("--checkpoint", default="best", help="best | last | a .h5 weights file or checkpoint prefix")
    ev.add_argument("--shards", type=Path, help="shard folder (default: data.shards of the run)")
    ev.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("RUN_A", "RUN_B"),
        help="paired comparison of two evaluated runs on the same images (McNemar, B - A)",
    )
    ev.add_argument("--out", type=Path, help="with --compare: also write compare.json and compare.md here")
    ev.set_defaults(func=commands.cmd_evaluate)

    pr = sub.add_parser("predict", parents=[common], help="classify PNG/JPEG/DICOM files")
    pr.add_argument("--run-dir", type=Path, required=True)
    pr.add_argument("files", nargs="+", type=Path, metavar="FILE_OR_DIR")
    pr.add_argument("--checkpoint", default="best")
    pr.add_argument("--csv", type=Path, help="also write the predictions here")
    pr.add_argument("--explain", action="store_true", help="write a Grad-CAM overlay PNG per file")
    pr.add_argument("--explain-dir", type=Path, default=Path("gradcam"), help="where --explain writes (./gradcam)")
    pr.add_argument("--explain-target", choices=["vs-normal", "logit"], default="vs-normal",
                    help="Grad-CAM score: log-odds of the class against normal (default) or its logit")  # fmt: skip
    pr.set_defaults(func=commands.cmd_predict)

    ex = sub.add_parser("export", parents=[common], help="SavedModel + Keras file + preprocessing contract")
    ex.add_argument("--run-dir", type=Path, required=True)
    ex.add_argument("--checkpoint", default="best")
    ex.add_argument("--out", type=Path, help="default: RUN/export")
    ex.set_defaults(func=commands.cmd_export)

    sb = sub.add_parser("submit", parents=[common], help="render jobs/*.sbatch for a cluster and sbatch them")
    sb.add_argument("what", choices=["preprocess", "train", "evaluate", "pipeline", "sweep"],
                    help="one stage, all three chained with --dependency=afterok, or a sweep (job array)")  # fmt: skip
    sb.add_argument("--cluster", help="profile name in configs/clusters/ or a YAML path (default: cluster.profile)")
    sb.add_argument("--run-dir", type=Path, required=True, help="run folder; job scripts and logs go to RUN/slurm")
    sb.add_argument("--split", default="val", choices=["val", "test"], help="split for the evaluate job")
    sb.add_argument("--dry-run", action="store_true", help="print the scripts and sbatch lines, submit nothing")
    sb.add_argument("--mail-user", help="mail job events to this address (overrides the profile)")
    sb.add_argument("--mail-type", help="SLURM mail events, e.g. END,FAIL (overrides the profile)")
    sg = sb.add_argument_group("sweep (hpml submit sweep)")
    sg.add_argument("--grid", action="append", default=[], metavar="SECTION.KEY=V1,V2",
                    help="values to sweep (repeatable; the grid is every combination)")  # fmt: skip
    sg.add_argument("--sweep", type=Path, metavar="FILE", help="sweep YAML: config, set, grid, parallel")
    sg.add_argument("--parallel", type=int, metavar="K", help="points running at once (--array=...%%K)")
    sb.set_defaults(func=commands.cmd_submit)

    sw = sub.add_parser("sweep", help="compare the points of a sweep")
    sw_sub = sw.add_subparsers(dest="action", required=True, metavar="ACTION")
    sr = sw_sub.add_parser("report", parents=[common], help="table (Markdown + CSV) and learning curves")
    sr.add_argument("sweep_dir", type=Path, metavar="SWEEP")
    sr.add_argument("--metric", default="val_accuracy", choices=["val_accuracy", "val_loss", "accuracy", "loss"])
    sr.add_argument("--out", type=Path, help="default: SWEEP/")
    sr.set_defaults(func=commands.cmd_sweep_report)

    st = sub.add_parser("status", parents=[common], help="SLURM state and training progress of a run or sweep")
    st.add_argument("path", type=Path, metavar="RUN|SWEEP")
    st.add_argument("--json", action="store_true", help="machine-readable")
    st.add_argument("--watch", type=float, nargs="?", const=30.0, metavar="SECONDS",
                    help="refresh until every job has ended (default every 30 s)")  # fmt: skip
    st.set_defaults(func=commands.cmd_status)

    ef = sub.add_parser(
        "efficiency", parents=[common], help="what a run's jobs used: CPU, memory, GPU (after the fact)"
    )
    ef.add_argument("path", type=Path, metavar="RUN|SWEEP")
    ef.set_defaults(func=commands.cmd_efficiency)

    bench = sub.add_parser("bench", help="measure throughput (prints images/s and ratios)")
    bench_sub = bench.add_subparsers(dest="action", required=True, metavar="WHAT")
    bp = bench_sub.add_parser("preprocess", parents=[common], help="bare OpenCV loop vs 1 vs N ranks")
    bp.add_argument("--split-dir", type=Path, help="the image set: a split folder (data.split_dir)")
    bp.add_argument("--ranks", type=int, default=2)
    bp.set_defaults(func=commands.cmd_bench_preprocess)

    bi = bench_sub.add_parser("input", parents=[common], help="seed loader vs hpml tf.data vs bare decode")
    bi.add_argument("--shards", type=Path, help="shard folder (data.shards)")
    bi.add_argument("--split-dir", type=Path, help="split folder of the same images (data.split_dir)")
    bi.add_argument("--limit", type=int, default=300, help="images per measurement")
    bi.set_defaults(func=commands.cmd_bench_input)

    bl = bench_sub.add_parser("loop", parents=[common], help="hpml train's loop vs a bare Horovod fit (mpirun)")
    bl.add_argument("--shards", type=Path, help="shard folder (data.shards)")
    bl.add_argument("--steps", type=int, default=100, help="steps per timed fit")
    bl.add_argument("--rounds", type=int, default=4, help="timed fits of each loop, alternating")
    bl.add_argument("--json", type=Path, help="also write the numbers here")
    bl.set_defaults(func=commands.cmd_bench_loop)

    dm = sub.add_parser("demo", parents=[common], help="the whole pipeline end to end on this machine")
    dm.add_argument("--data", type=Path, help="folder of real source folders (default: generate data)")
    dm.add_argument("--ranks", type=int, default=2, help="MPI ranks for preprocess/train/evaluate")
    dm.add_argument("--out", type=Path, default=Path("demo-out"))
    dm.add_argument("--per-class", type=int, default=200, help="synthetic images per class")
    dm.set_defaults(func=commands.cmd_demo)

    bs = bench_sub.add_parser("scaling", parents=[common], help="parameters, FLOPs, allreduce bytes, predicted scaling")
    a = bs.add_argument_group("assumptions (defaults: A100, NVLink, 200 Gb/s)")
    a.add_argument("--device-tflops", type=float, default=30.0, help="achieved training TFLOPS per GPU")
    a.add_argument("--intra-gbps", type=float, default=200.0, help="GB/s allreduce bus bandwidth inside a node")
    a.add_argument("--inter-gbit", type=float, default=200.0, help="Gb/s network per node")
    a.add_argument("--gpus-per-node", type=int, default=4)
    a.add_argument("--batch-per-gpu", type=int, help="default: train.batch_size")
    bs.add_argument("--gpus", default="1,2,4,8,16,32,64", help="GPU counts to predict")
    m = bs.add_argument_group("--measure: real steps on a shaped 2-node network on this machine (root)")
    m.add_argument("--measure", action="store_true", help="check the model against measured steps and allreduces")
    m.add_argument("--rates", default="0.5,1", help="link rates in Gbit/s per direction (default 0.5,1)")
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
    bs.set_defaults(func=commands.cmd_bench_scaling)

    syn = sub.add_parser("synth", parents=[common], help="generate a raw corpus in the 5 source layouts")
    syn.add_argument("--out", type=Path, required=True)
    syn.add_argument("--per-class", type=int, default=100, help="images per class")
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=commands.cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    # The collective failure rule (hpml.failure): an error on any rank ends every rank, once.
    return failure.run(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
