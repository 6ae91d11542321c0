"""The CLI explains itself (issue 26): every option has a help text and shows its default (only a
real one: no "default: None"), every command's --help ends with example command lines that parse,
and `hpml completion bash|zsh` completes commands, options, choices and files from the parser.

The parser is walked in-process (fast); `hpml --help` and `source <(hpml completion bash)` run once
each as real commands.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from hpml.cli.main import build_parser, main

PARSER = build_parser()


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*path, name))


COMMANDS = dict(walk(PARSER))
IDS = [" ".join(("hpml", *path)) for path in COMMANDS]


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every option and positional argument, but -h and the subcommand choice."""
    skip = (argparse._HelpAction, argparse._SubParsersAction)
    return [a for a in parser._actions if not isinstance(a, skip)]


def real_default(action: argparse.Action) -> bool:
    """A default worth printing: a value (not None, False, an empty list), of an option."""
    default = action.default
    if default is None or default is False or default is argparse.SUPPRESS or default == []:
        return False
    return bool(action.option_strings)


def expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action)


def test_the_walk_reaches_every_command_and_subcommand():
    for path in [("train",), ("covidx", "build"), ("covidx", "import"), ("weights", "fetch"), ("config", "show")]:
        assert path in COMMANDS
    assert ("bench", "scaling") in COMMANDS and ("sweep", "report") in COMMANDS and ("completion",) in COMMANDS
    assert sum(len(options(p)) for p in COMMANDS.values()) > 150


def test_every_option_has_a_help_text():
    missing = [
        f"hpml {' '.join(path)}: {'/'.join(a.option_strings) or a.dest}"
        for path, parser in COMMANDS.items()
        for a in options(parser)
        if not (a.help or "").strip()  # argparse.SUPPRESS (a hidden alias kept for scripts) counts as given
    ]
    assert missing == []


def test_a_real_default_is_shown_once_and_no_default_is_noise():
    for path, parser in COMMANDS.items():
        for a in options(parser):
            if a.help == argparse.SUPPRESS:
                continue
            text = expanded_help(parser, a)
            where = f"hpml {' '.join(path)} {'/'.join(a.option_strings) or a.dest}: {text!r}"
            if real_default(a):
                assert f"(default: {a.default})" in text and text.count("default") == 1, where
            assert not re.search(r"default: (None|False|\[\])", text), where
        assert not re.search(r"default: (None|False|\[\])", parser.format_help())


def test_defaults_are_shown_where_they_were_missing():
    assert "(default: 100)" in expanded_help(COMMANDS[("synth",)], _option(("synth",), "--per-class"))
    assert "(default: best)" in expanded_help(COMMANDS[("export",)], _option(("export",), "--checkpoint"))
    assert "seconds (default: 600)" in expanded_help(
        COMMANDS[("bench", "preprocess")], _option(("bench", "preprocess"), "--max-seconds")
    )
    assert "default" not in expanded_help(COMMANDS[("train",)], _option(("train",), "--restart"))  # a flag: False


def _option(path: tuple[str, ...], name: str) -> argparse.Action:
    return next(a for a in COMMANDS[path]._actions if name in a.option_strings)


def example_lines(text: str) -> list[str]:
    """The indented lines after `examples:` in a help text."""
    _, found, rest = text.partition("\nexamples:\n")
    assert found, "no examples: section"
    return [line.strip() for line in rest.splitlines() if line.startswith("  ")]


def hpml_arguments(line: str) -> list[str]:
    """The arguments of the hpml command in an example (after mpirun, VAR=..., `source <(`)."""
    match = re.search(r"(?:^|[\s(])hpml ([^#>|)]*)", line)
    assert match, f"no hpml command in {line!r}"
    return shlex.split(match.group(1))


@pytest.mark.parametrize("path", list(COMMANDS), ids=IDS)
def test_each_help_ends_with_examples_of_the_command_that_parse(path, capsys):
    with pytest.raises(SystemExit) as done:
        PARSER.parse_args([*path, "--help"])  # what `hpml ... --help` prints
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: hpml {' '.join(path)}".rstrip())
    lines = example_lines(text)
    assert any(hpml_arguments(line)[: len(path)] == list(path) for line in lines), lines
    for line in lines:
        args = hpml_arguments(line)
        if "--help" in args:
            continue
        try:
            PARSER.parse_args(args)
        except SystemExit:
            pytest.fail(
                f"hpml {' '.join(path)} --help: the example {line!r} does not parse:\n{capsys.readouterr().err}"
            )


def test_hpml_help_as_a_command():
    proc = subprocess.run(
        [sys.executable, "-m", "hpml.cli", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("synth", "covidx", "train", "predict", "completion", "examples:", "--version"):
        assert command in proc.stdout


def test_source_layouts_are_counted_right():
    """preprocess/covidx/sources reads 5 layouts (ieee8023, Actualmed, Figure1, RSNA, SIRM)."""
    text = expanded_help(COMMANDS[("covidx", "build")], _option(("covidx", "build"), "--sources"))
    assert "5 COVIDx layouts" in text and all(n in text for n in ("ieee8023", "Actualmed", "Figure1", "RSNA", "SIRM"))


# --- completion -------------------------------------------------------------------------------


def completion(shell: str, capsys) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def run_bash(script: str, cwd) -> str:
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


CASES = {  # words typed (the last one is being completed) -> what completes it
    "hpml tr": "train",
    "hpml train --r": "--restart --run-dir",
    "hpml covidx b": "build",
    "hpml bench s": "scaling",
    "hpml --ver": "--version",
    "hpml evaluate --split ''": "test val",
    "hpml evaluate --split = t": "test",  # --split=t (bash splits at =)
    "hpml submit ''": "evaluate pipeline preprocess sweep train",
    "hpml submit train --cl": "--cluster",
    "hpml completion ''": "bash zsh",
    "hpml bench scaling --transport ''": "gloo mpi",
    "hpml train --set ''": "",  # free text: nothing offered
    "hpml train --run-dir r": "raw run.yaml runs",  # Path option: files
    "hpml train --config run.yaml --run-dir ru": "run.yaml runs",
    "hpml covidx build --sources raw r": "raw run.yaml runs",  # nargs +: every word a file
    "hpml covidx build --sources raw --o": "--out",
    "hpml predict --run-dir runs ra": "raw",  # the positional FILE_OR_DIR
    "hpml status --watch r": "raw run.yaml runs",  # --watch's value is optional
    "hpml weights import --out x.h5 --config run.yaml r": "raw run.yaml runs",
}


def test_bash_completion(tmp_path, capsys):
    script = tmp_path / "hpml.bash"
    script.write_text(completion("bash", capsys))
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    (tmp_path / "raw").mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "run.yaml").write_text("{}\n")
    lines = [f"source {shlex.quote(str(script))}"]
    lines += ['t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _hpml; }']
    for typed in CASES:
        lines += [f"t {typed}", 'printf "%s\\n" "$(printf "%s\\n" "${COMPREPLY[@]}" | sort | tr "\\n" " ")"']
    for path in COMMANDS:  # the tables hold what the parser holds
        key = shlex.quote(" ".join(path))
        lines += [f'echo "$(_hpml_options {key})"', f'echo "$(_hpml_commands {key})"']
    out = run_bash("\n".join(lines), tmp_path).split("\n")
    got = {typed: out[i].strip() for i, typed in enumerate(CASES)}
    assert got == CASES
    tables = out[len(CASES) :]
    for i, (path, parser) in enumerate(COMMANDS.items()):
        shown = {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
        subs = [n for a in parser._actions if isinstance(a, argparse._SubParsersAction) for n in a.choices]
        assert set(tables[2 * i].split()) == shown, path
        assert tables[2 * i + 1].split() == subs, path


def test_bash_completion_sourced_from_the_command(tmp_path):
    """As a user loads it: source <(hpml completion bash)."""
    hpml = f"{shlex.quote(sys.executable)} -m hpml.cli"
    out = run_bash(
        f'source <({hpml} completion bash); COMP_WORDS=(hpml tr); COMP_CWORD=1; _hpml; echo "${{COMPREPLY[@]}}"; '
        'COMP_WORDS=(hpml train --r); COMP_CWORD=2; _hpml; echo "${COMPREPLY[@]}"; complete -p hpml',
        tmp_path,
    )
    assert out.splitlines() == ["train", "--run-dir --restart", "complete -F _hpml hpml"]


def test_zsh_completion_wraps_the_bash_function(capsys, tmp_path):
    text = completion("zsh", capsys)
    assert "bashcompinit" in text and "_hpml()" in text and "complete -F _hpml hpml" in text
    if shutil.which("zsh") is None:
        pytest.skip("no zsh here: the script's content is checked, not its syntax")
    (tmp_path / "hpml.zsh").write_text(text)
    assert subprocess.run(["zsh", "-n", str(tmp_path / "hpml.zsh")], capture_output=True).returncode == 0


def test_completion_refuses_other_shells(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["completion", "fish"])
    assert "invalid choice: 'fish'" in capsys.readouterr().err
