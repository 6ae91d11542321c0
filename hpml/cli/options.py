"""What every command group shares: the parser class and its help layout, the configuration
options, argument types, required values."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from hpml.core.config import CLASSES, ConfigError


class HelpFormatter(argparse.HelpFormatter):
    """argparse's layout, with each option's default shown where it has one worth showing (not None,
    False, or an empty list: the help says what then happens), and examples kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if text == argparse.SUPPRESS or "%(default)" in text or not shown_default(action):
            return text
        return f"{text} (default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Paragraphs (blank-line separated) are filled; one with an indented line (an example) is kept."""
        out = []
        for para in text.split("\n\n"):
            if any(line.startswith(" ") for line in para.splitlines()):
                out.append("\n".join(indent + line for line in para.splitlines()))
            else:
                out.append(
                    textwrap.fill(" ".join(para.split()), width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n\n".join(out)


def shown_default(action: argparse.Action) -> bool:
    """Whether `--help` prints the action's default: a real value, of an option (or optional positional)."""
    default = action.default
    if default is None or default is False or default is argparse.SUPPRESS:
        return False
    if isinstance(default, list | tuple | str) and not default:
        return False
    return bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)


class _Commands(argparse._SubParsersAction):
    """Subcommands whose own `--help` opens with the line the command list shows (unless described)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if kwargs.get("help"):
            kwargs.setdefault("description", kwargs["help"])
        return super().add_parser(name, **kwargs)


class Parser(argparse.ArgumentParser):
    """hpml's parsers: HelpFormatter; subcommand parsers (add_subparsers) are Parsers too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)


def examples(*lines: str) -> str:
    """An epilog of example command lines (tests/unit/test_cli_help.py parses each with its parser)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


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
