"""What every command group shares: the configuration options, argument types, required values."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hpml.core.config import CLASSES, ConfigError


def config_options() -> argparse.ArgumentParser:
    """`--config`, repeated `--set` and `-v`: a parent parser for every command."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("configuration")
    group.add_argument("--config", type=Path, help="experiment YAML (configs/*.yaml)")
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set train.lr=1e-4",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parent


def per_class(text: str) -> dict[str, int]:
    """`N` (every class) or `normal=N,pneumonia=N,COVID-19=N`."""
    if "=" not in text:
        return {c: int(text) for c in CLASSES}
    out = {}
    for item in text.split(","):
        name, _, n = item.partition("=")
        if name not in CLASSES:
            raise argparse.ArgumentTypeError(f"unknown class {name!r} (classes: {', '.join(CLASSES)})")
        out[name] = int(n)
    return out


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def at_least(low: int):
    """An argparse type: a whole number >= low (argparse names the option in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    parse.__name__ = f"whole number >= {low}"
    return parse


def required(value: Any, option: str, key: str) -> Any:
    """A value that may come from the command line or the config, but must come from one."""
    if value is None:
        raise ConfigError(f"give {option} or set {key} in the config")
    return value
