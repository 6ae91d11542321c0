"""`hpml <command>`: the parser, one group of commands per module, and the failure rule around them."""

from __future__ import annotations

import argparse
import logging

from hpml.cli import bench, cluster, data, training, weights
from hpml.cli.options import config_options
from hpml.core import failure
from hpml.core.logs import setup_logging

GROUPS = (data, training, weights, cluster, bench)  # in the order `hpml --help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpml", description="COVID-19 chest X-ray classification on SLURM clusters with MPI and Horovod."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = config_options()
    for group in GROUPS:
        group.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    # The collective failure rule (hpml.core.failure): an error on any rank ends every rank, once.
    return failure.run(lambda: args.func(args))
