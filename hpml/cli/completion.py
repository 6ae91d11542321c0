"""`hpml completion bash|zsh`: a shell completion script generated from hpml's own parser.

The script is data written out as `case` tables, walked from the parser each time it is printed,
so it can never list a command or option the parser does not have:

    _hpml_commands PATH           the subcommands of a command path ("" is `hpml` itself, "covidx")
    _hpml_options PATH            the option strings of that command (hidden ones left out)
    _hpml_value PATH OPTION       what follows the option: "" (a flag), "text", "files" (a Path-typed
                                  option, or metavar FILE), "choices A B ..." (choices=); "many ..."
                                  for nargs +/* (every following word is a value)
    _hpml_positional PATH N       the same for the N-th positional argument (the last one of nargs
                                  +/* repeats)

`_hpml` walks COMP_WORDS to the command path, then completes the current word: an option name, an
option's value (also after `--opt=`), a subcommand, or a positional argument. Only POSIX-ish bash
is used (case tables, no associative arrays, no compopt outside a guard), so zsh runs the same
function through `bashcompinit`: the zsh script loads compinit and bashcompinit when they are not
loaded yet, then registers `_hpml` with `complete`. Install (README.md):

    source <(hpml completion bash)     # in ~/.bashrc
    source <(hpml completion zsh)      # in ~/.zshrc
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hpml.cli.options import examples

SHELLS = ("bash", "zsh")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    comp = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh) made from this parser",
        description="Print a completion script for hpml's commands, options, choices and file arguments, "
        "generated from the parser itself. zsh runs the bash function through bashcompinit.",
        epilog=examples(
            "source <(hpml completion bash)     # in ~/.bashrc",
            "source <(hpml completion zsh)      # in ~/.zshrc",
            "hpml completion bash > ~/.local/share/bash-completion/completions/hpml",
        ),
    )
    comp.add_argument("shell", choices=SHELLS, help="the shell the script is for")
    comp.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    print(script(args.parser, args.shell), end="")
    return 0


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every command path -> its parser, `()` being the top parser, in the parser's order."""
    found: dict[tuple[str, ...], object] = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(commands(child, (*path, name)))
    return found


def value_kind(action: argparse.Action) -> str:
    """What a word for this action is: "" (none: a flag, or an option whose value is optional),
    "text", "files", or "choices A B"; "many ..." for nargs +/*."""
    if action.nargs == 0 or (action.option_strings and action.nargs == argparse.OPTIONAL):
        return ""
    if action.choices is not None:
        kind = "choices " + " ".join(str(c) for c in action.choices)
    elif action.type is Path or action.metavar == "FILE":
        kind = "files"
    else:
        kind = "text"
    return f"many {kind}" if action.nargs in (argparse.ONE_OR_MORE, argparse.ZERO_OR_MORE) else kind


def _word(text: str) -> str:
    """A bash single-quoted word: every table entry is a literal."""
    return "'" + text.replace("'", "'\\''") + "'"


def _table(name: str, doc: str, rows: list[tuple[str, str]], arguments: str) -> str:
    lines = [f"{name}() {{  # {doc}", f'  case "{arguments}" in']
    lines += [f"    {_word(key)}) echo {_word(value)} ;;" for key, value in rows if value]
    lines += ["  esac", "}"]
    return "\n".join(lines)


def tables(parser: argparse.ArgumentParser) -> str:
    """The four lookup functions of the script, from the parser."""
    subcommands, options, values, positionals = [], [], [], []
    for path, p in commands(parser).items():
        key = " ".join(path)
        subs = [
            name
            for a in p._actions
            if isinstance(a, argparse._SubParsersAction)
            for name in a.choices  # aliases included; argparse lists them in choices too
        ]
        subcommands.append((key, " ".join(subs)))
        shown = [a for a in p._actions if a.option_strings and a.help != argparse.SUPPRESS]
        options.append((key, " ".join(s for a in shown for s in a.option_strings)))
        for a in p._actions:
            if a.option_strings:  # hidden options still take their value when typed
                values += [(f"{key} {s}", value_kind(a)) for s in a.option_strings]
        plain = [a for a in p._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
        for i, a in enumerate(plain):
            many = a.nargs in (argparse.ONE_OR_MORE, argparse.ZERO_OR_MORE)
            kind = value_kind(a).removeprefix("many ")
            positionals.append((f"{key} {'*' if many and i == len(plain) - 1 else i}", kind))
    return "\n\n".join(
        [
            _table("_hpml_commands", "COMMAND PATH -> its subcommands", subcommands, "$1"),
            _table("_hpml_options", "PATH -> its option strings", options, "$1"),
            _table("_hpml_value", 'PATH OPTION -> "" | text | files | choices A B (many: nargs +/*)', values, "$1 $2"),
            _positional_table(positionals),
        ]
    )


def _positional_table(rows: list[tuple[str, str]]) -> str:
    """`_hpml_positional PATH N`: the N-th positional; a last positional of nargs +/* is keyed `PATH *`."""
    lines = ["_hpml_positional() {  # PATH N -> text | files | choices A B", '  case "$1 $2" in']
    for key, kind in rows:
        if not kind:
            continue
        path, _, index = key.rpartition(" ")
        pattern = f"{_word(path + ' ')}[0-9]*" if index == "*" else _word(key)
        lines.append(f"    {pattern}) echo {_word(kind)} ;;")
    lines += ["  esac", "}"]
    return "\n".join(lines)


COMPLETE = r"""
_hpml_reply() {  # KIND CUR: fill COMPREPLY
  case "$1" in
    files)
      local IFS='
'
      type compopt >/dev/null 2>&1 && compopt -o filenames 2>/dev/null
      COMPREPLY=( $(compgen -f -- "$2") ) ;;
    choices\ *) COMPREPLY=( $(compgen -W "${1#choices }" -- "$2") ) ;;
    *) COMPREPLY=() ;;
  esac
}

_hpml() {
  local cur="${COMP_WORDS[COMP_CWORD]}" cmd="" w kind="" many="" i=1 n=0 subs
  COMPREPLY=()
  while [ "$i" -lt "$COMP_CWORD" ]; do  # the command path, and where the current word stands
    w="${COMP_WORDS[$i]}"
    i=$((i + 1))
    if [ "$w" = "=" ]; then  # `--opt=value`: bash splits it as --opt, =, value
      [ "$i" -lt "$COMP_CWORD" ] && i=$((i + 1))
      continue
    fi
    case "$w" in
      -*)
        kind="$(_hpml_value "$cmd" "${w%%=*}")"
        many=""
        case "$kind" in
          many\ *) many="${kind#many }" ;;
          ?*) case "$w" in *=*) ;; *) [ "${COMP_WORDS[$i]}" = "=" ] || i=$((i + 1)) ;; esac ;;
        esac
        continue ;;
    esac
    [ -n "$many" ] && continue  # a value of the last nargs +/* option
    subs=" $(_hpml_commands "$cmd") "
    case "$subs" in
      *" $w "*) cmd="${cmd:+$cmd }$w"; n=0 ;;
      *) n=$((n + 1)) ;;
    esac
  done
  local prev="${COMP_WORDS[COMP_CWORD-1]}"
  if [ "$cur" = "=" ]; then  # `--opt=` with nothing typed after the =
    kind="$(_hpml_value "$cmd" "$prev")"; _hpml_reply "${kind#many }" ""; return 0
  fi
  if [ "$prev" = "=" ] && [ "$COMP_CWORD" -ge 2 ]; then
    kind="$(_hpml_value "$cmd" "${COMP_WORDS[COMP_CWORD-2]}")"; _hpml_reply "${kind#many }" "$cur"; return 0
  fi
  case "$cur" in
    -*) COMPREPLY=( $(compgen -W "$(_hpml_options "$cmd")" -- "$cur") ); return 0 ;;
  esac
  case "$prev" in
    -*)
      kind="$(_hpml_value "$cmd" "$prev")"
      if [ -n "$kind" ]; then _hpml_reply "${kind#many }" "$cur"; return 0; fi ;;
  esac
  if [ -n "$many" ]; then _hpml_reply "$many" "$cur"; return 0; fi
  subs="$(_hpml_commands "$cmd")"
  if [ -n "$subs" ]; then COMPREPLY=( $(compgen -W "$subs" -- "$cur") ); return 0; fi
  kind="$(_hpml_positional "$cmd" "$n")"
  _hpml_reply "$kind" "$cur"
  return 0
}
"""

HEADER = """# {shell} completion for hpml, generated by `hpml completion {shell}` from hpml's own parser:
# regenerate it after upgrading hpml. Load it with: source <(hpml completion {shell})
"""

ZSH_LOAD = """# zsh runs the bash completion function through bashcompinit.
if ! (( $+functions[compdef] )); then autoload -U +X compinit && compinit; fi
if ! (( $+functions[complete] )); then autoload -U +X bashcompinit && bashcompinit; fi
"""


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` ("bash" or "zsh"), made from `parser`."""
    if shell not in SHELLS:
        raise ValueError(f"no completion for {shell!r} (shells: {', '.join(SHELLS)})")
    name = parser.prog
    body = tables(parser) + "\n" + COMPLETE
    parts = [HEADER.format(shell=shell)]
    if shell == "zsh":
        parts.append(ZSH_LOAD)
    parts += [body, f"complete -F _hpml {name}\n"]
    return "\n".join(parts)
