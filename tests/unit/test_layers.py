"""The import graph: no cycles, and every import points down the layer order.

Every import is walked, those inside functions included: a function-level import that only
dodges a cycle still makes the cycle, and an upward one still ties a lower layer to a higher.
The order is the one docs/architecture.md draws; a unit may import only units of earlier layers
(units of one layer are independent of each other).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS: list[set[str]] = [
    {"hpml.core"},
    {"hpml.parallel", "hpml.imaging", "hpml.models", "hpml.shards", "hpml.slurm"},
    {"preprocess"},
    {"hpml.train"},
    {"hpml.evaluation", "hpml.serve"},
    {"hpml.bench"},
    {"hpml.cli", "hpml.api"},
]
ROOTS = ("hpml", "preprocess")


def modules(repo: Path, roots=ROOTS) -> dict[str, Path]:
    """Dotted module name -> file, for every module under the roots."""
    found = {}
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def edges(repo: Path, roots=ROOTS) -> list[tuple[str, str, int]]:
    """(importer, imported module, line) for every import of one of our modules, at any depth."""
    known = modules(repo, roots)
    out = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in known:  # `import a.b.c` of a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name and target.split(".")[0] in roots:
                    out.append((name, target, node.lineno))
    return out


def unit(module: str) -> str:
    """The layer unit a module belongs to: hpml.<subpackage or module>, or preprocess."""
    parts = module.split(".")
    return parts[0] if parts[0] != "hpml" or len(parts) == 1 else ".".join(parts[:2])


def layer_of(u: str, layers=LAYERS) -> int:
    for i, members in enumerate(layers):
        if u in members:
            return i
    raise KeyError(f"{u} is in no layer: add it to LAYERS (tests/unit/test_layers.py) and docs/architecture.md")


def upward(found: list[tuple[str, str, int]], layers=LAYERS) -> list[str]:
    bad = []
    for src, dst, line in found:
        a, b = unit(src), unit(dst)
        if a != b and "hpml" not in (a, b) and layer_of(b, layers) >= layer_of(a, layers):
            bad.append(f"{src}:{line} imports {dst} ({b} is not below {a})")
    return bad


def cycles(found: list[tuple[str, str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for src, dst, _ in found:
        graph.setdefault(src, set()).add(dst)
        graph.setdefault(dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(edges(REPO)) == []


def test_every_import_points_down_the_layers():
    assert upward(edges(REPO)) == []


def test_every_unit_has_a_layer_and_says_what_it_may_import():
    for name, path in modules(REPO).items():
        if name != "hpml":  # the top package holds only the map and __version__
            layer_of(unit(name))
        if path.name == "__init__.py" and name.count(".") == 1 and name.startswith("hpml."):
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "import" in doc.lower(), f"{path}: the docstring says what it holds and what it may import"


def test_horovod_is_imported_in_one_module_only():
    importers = set()
    for name, path in modules(REPO).items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "horovod" or n.startswith("horovod.") for n in names):
                importers.add(name)
    assert importers == {"hpml.parallel.distributed"}


@pytest.fixture()
def planted(tmp_path):
    """A two-layer copy of the idea: hpml.core, hpml.train, preprocess."""
    files = {
        "hpml/__init__.py": "",
        "hpml/core/__init__.py": "",
        "hpml/core/config.py": "X = 1\n",
        "hpml/train/__init__.py": "",
        "hpml/train/loop.py": "from hpml.core.config import X\n",
        "preprocess/__init__.py": "",
        "preprocess/run.py": "from hpml.core import config\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_the_check_sees_a_planted_upward_import_even_inside_a_function(planted):
    assert upward(edges(planted)) == [] and cycles(edges(planted)) == []
    (planted / "preprocess/run.py").write_text("def f():\n    from hpml.train import loop\n")
    assert upward(edges(planted)) == ["preprocess.run:2 imports hpml.train.loop (hpml.train is not below preprocess)"]
    (planted / "hpml/core/config.py").write_text("X = 1\n\n\ndef f():\n    from hpml.train.loop import X\n")
    assert cycles(edges(planted)) == [["hpml.core.config", "hpml.train.loop"]]
