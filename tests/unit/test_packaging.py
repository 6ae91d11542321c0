"""Packaging: what setup.py declares is what the code imports, and the light install works.

- Every third-party import of hpml/ and preprocess/ (those inside functions too, walked with ast as
  tests/unit/test_layers.py does) is a requirement of `pip install hpml` or of its `train` extra,
  and every such requirement is imported (or is a named plugin); every import of tests/ is declared,
  and what only the tests import is in the `dev` extra.
- `pip install hpml` (no extra) holds no TensorFlow, Horovod or MPI, and the login node's commands
  run without them (here: with their imports refused; tests/system/test_light_install.py installs
  the wheel into a fresh virtualenv).
- The build ships configs/*.yaml (`hpml demo` without --config) and records the commit
  (`hpml --version`); LICENSE and CITATION.cff agree with setup.py and hpml.__version__.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import re
import runpy
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import yaml
from conftest import REPO
from packaging.requirements import Requirement

import hpml

# Declared, never imported: loaded by the library named, at run time.
PLUGINS = {
    "pylibjpeg": "pydicom's decoder plugins (JPEG Lossless, JPEG 2000 in DICOM files)",
    "pylibjpeg-libjpeg": "pydicom's decoder plugins (JPEG Lossless, JPEG 2000 in DICOM files)",
    "pylibjpeg-openjpeg": "pydicom's decoder plugins (JPEG Lossless, JPEG 2000 in DICOM files)",
}
# In `dev`, never imported: tools.
TOOLS = {"pytest-timeout": "pytest plugin (pyproject.toml's timeout)", "ruff": "make lint"}
# One requirement whatever the TensorFlow build (setup.py's HPML_TENSORFLOW).
SAME = {"tensorflow-cpu": "tensorflow"}
TRAINING_STACK = {"tensorflow", "horovod", "mpi4py"}


def canonical(name: str) -> str:
    name = re.sub(r"[-_.]+", "-", name).lower()
    return SAME.get(name, name)


@functools.lru_cache
def setup_arguments() -> dict:
    """setup()'s keyword arguments: setup.py run with setuptools stubbed out (as containers/install.sh does)."""
    captured: dict = {}
    shim = types.ModuleType("setuptools")
    shim.setup = lambda **kwargs: captured.update(kwargs)
    shim.find_packages = lambda **kwargs: []
    command, build_py = types.ModuleType("setuptools.command"), types.ModuleType("setuptools.command.build_py")
    build_py.build_py = type("build_py", (), {})
    shim.command, command.build_py = command, build_py
    stubs = {"setuptools": shim, "setuptools.command": command, "setuptools.command.build_py": build_py}
    with mock.patch.dict(sys.modules, stubs):
        runpy.run_path(str(REPO / "setup.py"))
    return captured


def declared(group: str) -> set[str]:
    """Distribution names of install_requires ("core") or of an extra."""
    args = setup_arguments()
    reqs = args["install_requires"] if group == "core" else args.get("extras_require", {}).get(group, [])
    return {canonical(Requirement(r).name) for r in reqs}


def local_modules() -> set[str]:
    """Top-level names that are ours: the packages, and the tests' helpers (pyproject's pythonpath)."""
    names = {"hpml", "preprocess"}
    for folder in (REPO / "tests", REPO / "tests" / "workers"):
        names |= {p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/__init__.py")}
    return names


def third_party_imports(*folders: str) -> dict[str, list[str]]:
    """Top-level import name -> where ('path:line'), for every import not of the stdlib or ours."""
    ours = local_modules()
    found: dict[str, list[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module]
                else:
                    continue
                for root in {n.split(".")[0] for n in names}:
                    if root not in sys.stdlib_module_names and root not in ours:
                        found.setdefault(root, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def distributions(imports: dict[str, list[str]]) -> dict[str, list[str]]:
    """Distribution -> where it is imported, through this environment's packages_distributions()."""
    providers = importlib.metadata.packages_distributions()
    out: dict[str, list[str]] = {}
    unknown = []
    for root, where in imports.items():
        if root not in providers:
            unknown.append(f"{root} ({where[0]})")
        for dist in providers.get(root, []):
            out.setdefault(canonical(dist), []).extend(where)
    assert not unknown, f"imported, but no installed distribution provides them: {unknown}"
    return out


def optional() -> set[str]:
    """The optional extras' distributions (every extra but train and dev: `tracking`), imported when asked."""
    return set().union(*(declared(g) for g in setup_arguments().get("extras_require", {}) if g not in ("train", "dev")))


def test_runtime_imports_are_the_declared_requirements():
    runtime = distributions(third_party_imports("hpml", "preprocess"))
    core, train, extra = declared("core"), declared("train"), optional()
    undeclared = {d: w[:3] for d, w in runtime.items() if d not in core | train | extra}
    assert (
        not undeclared
    ), f"imported by hpml/preprocess but not in setup.py's install_requires, [train] or an optional extra: {undeclared}"
    unused = (core | train | extra) - set(runtime) - set(PLUGINS)
    assert not unused, f"declared in install_requires or an extra but imported nowhere in hpml/, preprocess/: {unused}"
    assert not core & train, f"declared twice: {core & train}"


def test_test_imports_map_to_the_dev_extra():
    tests = distributions(third_party_imports("tests"))
    core, train, dev = declared("core"), declared("train"), declared("dev")
    undeclared = {d: w[:3] for d, w in tests.items() if d not in core | train | dev}
    assert not undeclared, f"imported by tests/ but declared nowhere (add them to the dev extra): {undeclared}"
    unused = dev - set(tests) - set(TOOLS)
    assert not unused, f"in the dev extra but imported by no test: {unused}"
    assert not dev & (core | train), f"in dev and also in the install: {dev & (core | train)}"


def test_the_light_install_holds_no_training_stack():
    core, train = declared("core"), declared("train")
    assert not core & TRAINING_STACK, f"`pip install hpml` would pull {core & TRAINING_STACK}"
    assert TRAINING_STACK <= train
    # the Makefile and the container install what training needs, and the tools
    assert '-e ".[train,dev]"' in (REPO / "Makefile").read_text()
    assert '"$tmp/hpml[train]"' in (REPO / "containers" / "install.sh").read_text()


BLOCKER = """
import glob, importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))

class Light(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the light install)", name=name)

sys.meta_path.insert(0, Light())
from hpml.cli.main import main
for line in sys.argv[2:]:
    print("=== hpml", line, flush=True)
    try:
        code = main([m for a in line.split("\\t") for m in (sorted(glob.glob(a)) if "*" in a else [a])])
    except SystemExit as exc:
        code = exc.code
    if code:
        sys.exit(f"hpml {line}: exit {code}")
"""


def sweep_dir(root: Path) -> Path:
    """A finished two-point sweep, as training leaves it: sweep.json and each point's history."""
    sw = root / "sw"
    points = [{"index": i, "overrides": [f"train.lr={i + 1}"], "label": f"lr={i + 1}"} for i in range(2)]
    manifest = {"grid": {"train.lr": [1, 2]}, "points": points, "submissions": [], "epochs": {"0": 2, "1": 2}}
    sw.mkdir()
    (sw / "sweep.json").write_text(json.dumps(manifest))
    for i in range(2):
        (sw / f"p{i:03d}").mkdir()
        (sw / f"p{i:03d}" / "history.csv").write_text(
            "epoch,loss,accuracy,val_loss,val_accuracy\n" f"0,1.0,0.5,0.9,0.5\n1,0.8,0.6,{0.7 + i / 10},0.7\n"
        )
    return sw


def test_login_node_commands_run_without_the_training_stack(tmp_path):
    """Each light command, with every import of the train extra's distributions refused."""
    providers = importlib.metadata.packages_distributions()
    train = declared("train")
    blocked = {root for root, dists in providers.items() if {canonical(d) for d in dists} & train}
    blocked = sorted(blocked | TRAINING_STACK)
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    demo = REPO / "configs" / "demo.yaml"
    commands = [
        ["config", "show", "--config", demo, "--set", "train.lr=1e-4"],
        ["submit", "train", "--cluster", "local", "--config", demo, "--run-dir", "run"]
        + ["--set", f"data.shards={shards}", "--dry-run"],
        ["status", "run"],
        ["efficiency", "run"],
        ["sweep", "report", sweep_dir(tmp_path), "--metric", "val_loss"],
        ["synth", "--out", "raw", "--per-class", "1"],
        ["covidx", "build", "--sources", "raw/*", "--out", "split"],
        ["demo", "--help"],
        ["--version"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(blocked), *("\t".join(map(str, c)) for c in commands)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PATH": "/usr/bin:/bin"},  # no sbatch/squeue: nothing is queued or asked
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("=== hpml") == len(commands)
    assert "# would run: sbatch" in proc.stdout and (tmp_path / "sw" / "curves.png").is_file()
    assert (tmp_path / "split" / "train.txt").is_file()


def test_version_names_the_checkouts_commit():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    proc = subprocess.run([sys.executable, "-m", "hpml.cli", "--version"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    commit = head.stdout.strip() if head.returncode == 0 else "unknown"
    assert proc.stdout.strip() == f"hpml {hpml.__version__} (commit {commit})"


def test_the_build_ships_the_configs_and_records_the_commit(tmp_path):
    """setup.py's build step, as a wheel or `pip install .` runs it: an installed copy finds configs/demo.yaml."""
    lib = tmp_path / "lib"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        timeout=120,
    )
    shipped = lib / "hpml" / "_jobfiles" / "configs"
    assert sorted(p.name for p in shipped.glob("*.yaml")) == sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    assert (lib / "hpml" / "_jobfiles" / "clusters" / "local.yaml").is_file()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    recorded = runpy.run_path(str(lib / "hpml" / "_build.py"))["COMMIT"]
    assert recorded == (head.stdout.strip() if head.returncode == 0 else "unknown")
    code = "from hpml.cli.demo import default_config; from hpml.cli.main import version; "
    code += "print(default_config()); print(version())"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(lib), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    config, version = proc.stdout.splitlines()
    assert Path(config) == shipped / "demo.yaml"
    assert version == f"hpml {hpml.__version__} (commit {recorded})"
    manifest_in = (REPO / "MANIFEST.in").read_text()  # an sdist carries what the build step copies
    assert all(f"graft {d}" in manifest_in for d in ("jobs", "configs"))


def test_license_and_citation():
    assert setup_arguments()["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"] == "hpml" and cff["license"] == "Apache-2.0"
    assert str(cff["version"]) == hpml.__version__ == setup_arguments()["version"]
    assert cff["authors"] == [{"name": "hpml developers"}]
    dois = {ref.get("doi") for ref in cff["references"]}
    assert "10.1038/s41598-020-76550-z" in dois
