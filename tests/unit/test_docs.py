"""The documentation points at things that exist: links, anchors, file paths, module names.

Every relative link of README.md, docs/*.md and containers/README.md resolves (and its #anchor
names a heading of the target page); every `path` in backticks that starts at a top-level
folder of the repository exists (a glob matches something); every `hpml.x.y` / `preprocess.x`
in backticks is a module, or a name defined in one. (That the documented commands run is
tests/pipeline/test_documented_commands.py.)
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from hpml.core.config import Config

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "containers" / "README.md"]
TOP = ("hpml/", "preprocess/", "tests/", "jobs/", "configs/", "containers/", "docs/")


def anchors(page: Path) -> set[str]:
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(), re.M):
        slugs.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return slugs


def prose(page: Path) -> str:
    """The page without its code blocks (commands there are run, not resolved)."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)


def links(page: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", prose(page))


def module_exists(dotted: str) -> bool:
    """A module path, or a module path followed by names defined in that module."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:cut])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if source.is_file():
            rest = parts[cut:]
            if not rest:
                return True
            text = source.read_text()
            return bool(re.search(rf"^\s*(def|class) {rest[0]}\b|^{rest[0]}\b.*=", text, re.M))
    return False


def config_key(token: str) -> bool:
    """`preprocess.max_skipped`, `train.lr`: a section and key of the experiment config."""
    section, _, key = token.partition(".")
    hints = typing.get_type_hints(Config)
    return section in hints and key.split(".")[0] in {f.name for f in dataclasses.fields(hints[section])}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"^(https?|mailto):", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.name}")
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_paths_and_modules_exist(page):
    missing = []
    for token in re.findall(r"`([^`\s]+)`", prose(page)):
        token = token.rstrip(".,:;)")
        if token.startswith(TOP) and "<" not in token:
            path = token.split(":")[0].split("::")[0]
            if not (any(REPO.glob(path)) if any(c in path for c in "*?[") else (REPO / path).exists()):
                missing.append(token)
        elif re.fullmatch(r"(hpml|preprocess)(\.\w+)+", token):
            if not (module_exists(token) or config_key(token) or (page.parent / token).is_file()):
                missing.append(token)
    assert not missing, f"{page.name} names what does not exist: {missing}"
