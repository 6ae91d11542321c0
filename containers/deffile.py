"""Read an Apptainer definition file the way `apptainer build` does (header, sections, %files).

Used by `containers/check.sh` (which builds the CPU definition with debootstrap + chroot) and by
tests/unit/test_containers.py, so the check runs what the definition says instead of a copy of it.
Standard library only: it runs with the host's bare Python before anything is installed.

    python3 containers/deffile.py DEF header KEY     # value of a header key ("" if absent)
    python3 containers/deffile.py DEF section NAME   # body of %NAME (exit 3 if absent)
    python3 containers/deffile.py DEF args NAME      # arguments after %NAME (e.g. "-c /bin/bash")
    python3 containers/deffile.py DEF files          # one "SRC<TAB>DST" line per %files entry
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Apptainer's sections; a line starting with one of these opens it (anything after is its args).
SECTIONS = (
    "help",
    "setup",
    "files",
    "labels",
    "environment",
    "pre",
    "post",
    "runscript",
    "test",
    "startscript",
    "apprun",
    "appinstall",
    "appenv",
    "applabels",
    "appfiles",
    "apphelp",
    "apptest",
    "appstart",
)
_SECTION = re.compile(r"^%(" + "|".join(SECTIONS) + r")\b[ \t]*(.*)$")


@dataclass
class Definition:
    header: dict[str, str] = field(default_factory=dict)  # keys lower-cased, as Apptainer does
    sections: dict[str, str] = field(default_factory=dict)
    section_args: dict[str, str] = field(default_factory=dict)

    def files(self) -> list[tuple[str, str]]:
        """(src, dst) pairs of %files; dst "" means "same path inside the image"."""
        pairs = []
        for line in self.sections.get("files", "").splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) > 2:
                raise ValueError(f"%files line has more than a source and a destination: {line!r}")
            pairs.append((parts[0], parts[1] if len(parts) == 2 else ""))
        return pairs


def parse(text: str, source: str = "<definition>") -> Definition:
    """Header `Key: value` lines up to the first section, then sections up to the next one."""
    definition = Definition()
    current: str | None = None
    body: list[str] = []

    def close() -> None:
        if current is not None:
            if current in definition.sections:
                raise ValueError(f"{source}: section %{current} appears twice")
            definition.sections[current] = "\n".join(body).strip("\n")

    for number, line in enumerate(text.splitlines(), 1):
        match = _SECTION.match(line)
        if match:
            close()
            current, body = match.group(1), []
            definition.section_args[current] = match.group(2).split("#", 1)[0].strip()
        elif current is not None:
            body.append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"{source}:{number}: header line is not 'Key: value': {line!r}")
            definition.header[key.strip().lower()] = value.strip()
    close()
    if "bootstrap" not in definition.header:
        raise ValueError(f"{source}: no 'Bootstrap:' header")
    return definition


def load(path: str | Path) -> Definition:
    return parse(Path(path).read_text(), str(path))


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    definition = load(argv[0])
    command, rest = argv[1], argv[2:]
    if command == "header" and len(rest) == 1:
        print(definition.header.get(rest[0].lower(), ""))
    elif command == "section" and len(rest) == 1:
        if rest[0] not in definition.sections:
            print(f"{argv[0]}: no %{rest[0]} section", file=sys.stderr)
            return 3
        print(definition.sections[rest[0]])
    elif command == "args" and len(rest) == 1:
        print(definition.section_args.get(rest[0], ""))
    elif command == "files" and not rest:
        for src, dst in definition.files():
            print(f"{src}\t{dst}")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
