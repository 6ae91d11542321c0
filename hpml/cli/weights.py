"""Weights commands: `hpml weights fetch BACKBONE...` (on a login node) and `hpml weights import`.

Compute nodes have no internet: the login node fetches the Keras ImageNet files into the shared
cache ($HPML_WEIGHTS_DIR) and jobs read them with `model.weights: imagenet`
(hpml.models.weights_cache). `import` turns the seed's hdf5 (or an hpml checkpoint) into an hpml
weights file for `model.init_from` / `--checkpoint` (hpml.models.weights_import). Modules are
imported inside the commands so `hpml --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpml.cli.options import examples


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    fetching = "HPML_WEIGHTS_DIR=/project/shared/weights hpml weights fetch resnet50v2"
    importing = "hpml weights import cp-04-0.93.hdf5 --config configs/covidnet-resnet50v2-512.yaml --out seed-ep4.h5"
    weights = sub.add_parser(
        "weights",
        help="Keras ImageNet weights for the backbones (fetch on a login node)",
        epilog=examples(fetching, importing),
    )
    weights_sub = weights.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = weights_sub.add_parser(
        "fetch",
        parents=[common],
        help="download and verify the ImageNet 'notop' files into the shared cache",
        epilog=examples(fetching, "hpml weights fetch resnet50v2 mobilenetv2 --cache weights"),
    )
    fetch.add_argument("backbones", nargs="+", metavar="BACKBONE", help="resnet50v2, mobilenetv2, efficientnetb4")
    fetch.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="cache folder (default: $HPML_WEIGHTS_DIR, else ~/.cache/hpml/weights)",
    )
    fetch.add_argument(
        "--base-url",
        metavar="URL",
        help="a mirror with Keras' layout (default: $HPML_WEIGHTS_URL, else Keras' Google storage)",
    )
    fetch.set_defaults(func=cmd_weights_fetch)

    imp = weights_sub.add_parser(
        "import",
        parents=[common],
        help="convert the seed's hdf5 (also via multi_gpu_model) or an hpml checkpoint into an hpml weights file",
        description="Convert the seed's hdf5 (also via multi_gpu_model) or an hpml checkpoint into an hpml weights "
        "file for model.init_from or --checkpoint. --config names the model the weights are for.",
        epilog=examples(importing),
    )
    imp.add_argument("source", type=Path, metavar="FILE", help="a Keras .h5/.hdf5 or a checkpoint prefix (ckpt-N)")
    imp.add_argument("--out", type=Path, required=True, metavar="OUT.h5", help="the hpml weights file to write")
    imp.add_argument("--allow-partial", action="store_true", help="load what matches and leave the rest as initialised")
    imp.set_defaults(func=cmd_weights_import)


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from hpml.models import weights_cache

    items = {b: weights_cache.entry(b) for b in args.backbones}  # every name checked before any download
    for backbone, item in items.items():
        path = weights_cache.fetch(backbone, args.cache, args.base_url, progress=_Progress(item.name))
        size = path.stat().st_size
        if item.hash is None:
            sha256 = weights_cache.file_digest(path, "sha256")
            check = f"sha256 {sha256} UNVERIFIED (Keras publishes no hash for this file; checked: whole, HDF5)"
        else:
            check = f"{weights_cache.algorithm(item.hash)} {item.hash} verified"
        print(f"{backbone}: {path}  {size} bytes  {check}", flush=True)
    return 0


def cmd_weights_import(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hpml.core.config import load_config
    from hpml.models.build import build_model
    from hpml.models.weights_import import import_weights, save_weights_file

    if args.config is None:
        print("hpml weights import: --config CFG names the model the weights are for", file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.overrides)
    model = build_model(replace(cfg.model, weights=None, init_from=None), cfg.data.image_size)
    report = import_weights(args.source, model, allow_partial=args.allow_partial)
    print(report)
    save_weights_file(model, args.out)
    print(f"written: {args.out} (model {model.name}, {cfg.data.image_size} px, input_scale {cfg.model.input_scale})")
    return 0


class _Progress:
    """Download progress on stderr: a line per 10% on a terminal, nothing in a batch log."""

    def __init__(self, name: str) -> None:
        self.name, self.shown = name, -1
        self.active = sys.stderr.isatty()

    def __call__(self, done: int, total: int | None) -> None:
        tenth = done * 10 // total if total else -1
        if self.active and tenth > self.shown:
            self.shown = tenth
            print(f"{self.name}: {done / 1e6:.1f} of {total / 1e6:.1f} MB", file=sys.stderr, flush=True)
