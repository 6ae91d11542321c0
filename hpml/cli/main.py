"""`hpml <command>`: the parser, one group of commands per module, and the failure rule around them."""

from __future__ import annotations

import argparse
import logging
import subprocess
from pathlib import Path

from hpml import __version__
from hpml.cli import bench, cluster, completion, data, training, weights
from hpml.cli.options import Parser, config_options, examples
from hpml.core import failure
from hpml.core.logs import setup_logging

GROUPS = (data, training, weights, cluster, bench, completion)  # in the order `hpml --help` lists them


def version() -> str:
    """`hpml --version`: the version and the commit, the checkout's own in a checkout (editable install),
    else the one setup.py recorded at build time (hpml/_build.py), else unknown."""
    checkout = Path(__file__).resolve().parents[2]
    commit = "unknown"
    if (checkout / ".git").exists():
        try:
            proc = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
            commit = proc.stdout.strip() if proc.returncode == 0 else commit
        except OSError:
            pass
    else:
        try:
            from hpml._build import COMMIT as commit
        except ImportError:
            pass
    return f"hpml {__version__} (commit {commit})"


class _Version(argparse.Action):
    """argparse's version action, computed only when asked: no git call for every other command."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help"))

    def __call__(self, parser, namespace, values, option_string=None):
        print(version())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hpml",
        description="COVID-19 chest X-ray classification on SLURM clusters with MPI and Horovod.",
        epilog=examples(
            "hpml synth --out raw --per-class 40",
            "hpml covidx build --sources raw/* --out split",
            "mpirun -np 2 hpml preprocess --config configs/demo.yaml --split-dir split --out shards",
            "mpirun -np 2 hpml train --config configs/demo.yaml --shards shards --run-dir runs/demo",
            "hpml train --help                  # every command explains itself",
            "source <(hpml completion bash)     # tab completion",
        ),
    )
    parser.add_argument("--version", action=_Version, help="print the version and the commit it was built from")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = config_options()
    for group in GROUPS:
        group.register(sub, common)
    parser.set_defaults(parser=parser)  # `hpml completion` walks the whole parser
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    # The collective failure rule (hpml.core.failure): an error on any rank ends every rank, once.
    return failure.run(lambda: args.func(args))
