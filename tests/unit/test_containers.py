"""The Apptainer definitions, their one install script and `make container-check` agree.

`make container-check` really builds the CPU definition (debootstrap + chroot, minutes) and trains
in it; these are the fast checks. They read the definitions with containers/deffile.py (the
parser the check itself uses) and ask containers/install.sh what it would install.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from packaging.requirements import Requirement

CONTAINERS = REPO / "containers"
INSTALL_SH = CONTAINERS / "install.sh"
DEFS = {"cpu": CONTAINERS / "hpml-cpu.def", "gpu": CONTAINERS / "hpml.def"}

_spec = importlib.util.spec_from_file_location("deffile", CONTAINERS / "deffile.py")
deffile = sys.modules.setdefault("deffile", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(deffile)

# What nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04 installs and then `apt-mark hold`s, from
# NVIDIA's own Dockerfiles (gitlab.com/nvidia/container-images/cuda, dist/12.2.2/ubuntu2204/
# runtime, devel and devel/cudnn8). Asking apt for any of them again stops the build with
# "E: Held packages were changed and -y was used without --allow-change-held-packages".
HELD_BY_CUDA_BASE = {"libnccl2", "libnccl-dev", "libcublas-12-2", "libcublas-dev-12-2", "libcudnn8"}
# Never part of an image: the checkout's virtualenv, run and demo output, git history.
CHECKOUT_DEBRIS = [".venv", "runs", "demo-out", ".git", "build"]


def install_sh(*args: str) -> list[str]:
    out = subprocess.run(["bash", str(INSTALL_SH), *args], capture_output=True, text=True, check=True)
    return out.stdout.split()


def apt_get_installs(script: str) -> set[str]:
    """Package names of every `apt-get install` in a shell script (continuation lines joined)."""
    names = set()
    for match in re.finditer(r"apt-get\b[^\n;&|]*?\binstall\b([^\n;&|]*)", script.replace("\\\n", " ")):
        words = match.group(1).split()
        for i, word in enumerate(words):
            if word.startswith(("-", "$", '"$')) or (i and words[i - 1] == "-o"):
                continue
            names.add(word.split("=")[0])
    return names


def apt_installs(flavor: str) -> set[str]:
    """Every apt package the definition's %post asks for, itself or through install.sh."""
    post = deffile.load(DEFS[flavor]).sections["post"]
    names = apt_get_installs(post)
    for called in re.findall(r"containers/install\.sh\s+(cpu|gpu)\b", post):
        names |= set(install_sh("--apt-packages", called))
        names |= apt_get_installs(INSTALL_SH.read_text())
    return names


def setup_requirements(variant: str, tmp_path: Path) -> list[str]:
    """install_requires + the `train` extra (what the images install) as setuptools itself writes
    them (egg_info), for HPML_TENSORFLOW=variant."""
    tmp_path.mkdir()
    subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
        cwd=REPO,
        env={"HPML_TENSORFLOW": variant, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    requires = (tmp_path / "hpml.egg-info" / "requires.txt").read_text()
    core, *extras = requires.split("\n[")
    (train,) = [e.split("]\n", 1)[1] for e in extras if e.startswith("train]")]
    return core.split() + train.split()


def canonical(requirements: list[str]) -> list[str]:
    return [str(Requirement(r)) for r in requirements]


def test_gpu_definition_installs_no_package_the_cuda_base_holds():
    definition = deffile.load(DEFS["gpu"])
    assert definition.header["from"].startswith("nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04")
    asked = apt_installs("gpu")
    assert asked, "found no apt-get install in the GPU definition"
    assert not asked & HELD_BY_CUDA_BASE, f"the CUDA base image holds {sorted(asked & HELD_BY_CUDA_BASE)}"


@pytest.mark.parametrize("flavor", ["cpu", "gpu"])
def test_definition_copies_the_source_never_the_checkout(flavor):
    files = deffile.load(DEFS[flavor]).files()
    assert files, "%files is empty"
    for src, _ in files:
        copied = (REPO / src).resolve()
        assert copied.is_relative_to(REPO) and copied != REPO, f"%files {src!r} copies the whole checkout"
        for debris in CHECKOUT_DEBRIS:
            inside = copied.is_relative_to(REPO / debris) or (REPO / debris).is_relative_to(copied)
            assert not inside, f"%files {src!r} brings {debris}/ into the image"
        assert copied.exists(), f"%files source {src!r} does not exist"
    tops = {Path(src).parts[0] for src, _ in files}
    assert {"setup.py", "hpml", "preprocess", "configs", "jobs"} <= tops


def test_install_script_builds_from_a_clean_copy(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    for name in [
        "setup.py",
        "hpml/cli.py",
        "hpml/__pycache__/cli.cpython-311.pyc",
        "configs/demo.yaml",
        "jobs/train.sbatch",
        ".venv/bin/python",
        "runs/demo/history.csv",
        "demo-out/split/train.txt",
        ".git/HEAD",
        "hpml.egg-info/PKG-INFO",
        "build/lib/hpml/cli.py",
    ]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("x")
    install_sh("--clean-copy", str(src), str(dest))
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == ["configs/demo.yaml", "hpml/cli.py", "jobs/train.sbatch", "setup.py"]


@pytest.mark.parametrize("flavor", ["cpu", "gpu"])
def test_both_definitions_run_the_one_install_script(flavor):
    definition = deffile.load(DEFS[flavor])
    post = definition.sections["post"]
    calls = re.findall(r"^\s*bash (\S+/containers/install\.sh) (\w+)\s*$", post, re.M)
    assert calls == [(calls[0][0] if calls else "?", flavor)], f"%post must be one install.sh {flavor} call"
    copied = {dst: src for src, dst in definition.files()}
    assert copied.get(calls[0][0]) == "containers/install.sh"
    assert "apt-get" not in post and "pip" not in post, "installation belongs in install.sh"


def test_install_script_takes_the_pins_from_setup_py(tmp_path):
    cpu, gpu = install_sh("--requirements", "cpu"), install_sh("--requirements", "gpu")
    assert canonical(cpu) == canonical(setup_requirements("cpu", tmp_path / "cpu"))
    assert canonical(gpu) == canonical(setup_requirements("system-cuda", tmp_path / "gpu"))
    (cpu_tf,) = [r for r in cpu if r.startswith("tensorflow")]
    (gpu_tf,) = [r for r in gpu if r.startswith("tensorflow")]
    # the CUDA build of the same TensorFlow, without NVIDIA's pip copy of CUDA (the base has it)
    assert gpu_tf == cpu_tf.replace("tensorflow-cpu", "tensorflow") and "[and-cuda]" not in gpu_tf
    script = INSTALL_SH.read_text()
    for pin in gpu + cpu:
        assert pin not in script, f"install.sh restates the pin {pin}; setup.py is the one place"
    makefile = (REPO / "Makefile").read_text()
    (tools,) = re.findall(r'"(setuptools[^"]+)"', script)
    assert f'"{tools}"' in makefile, "build tools differ from the Makefile's"


def test_horovod_build_flags():
    cpu, gpu = install_sh("--horovod-env", "cpu"), install_sh("--horovod-env", "gpu")
    for flags in (cpu, gpu):
        assert {"HOROVOD_WITH_TENSORFLOW=1", "HOROVOD_WITH_MPI=1", "HOROVOD_WITHOUT_PYTORCH=1"} <= set(flags)
    assert not any("GPU" in flag or "CUDA" in flag for flag in cpu)
    assert {"HOROVOD_GPU_OPERATIONS=NCCL", "HOROVOD_BUILD_CUDA_CC_LIST=80,90", "HOROVOD_NCCL_LINK=SHARED"} <= set(gpu)


@pytest.mark.parametrize("flavor", ["cpu", "gpu"])
def test_runtime_environment_and_self_test(flavor):
    definition = deffile.load(DEFS[flavor])
    env = definition.sections["environment"]
    assert "/opt/venv/bin" in env
    # Horovod's docs/mpi.rst: MPI over TCP/shared memory (ob1, no openib); NCCL moves the tensors.
    assert "OMPI_MCA_pml=ob1" in env and "OMPI_MCA_btl=^openib" in env
    test = definition.sections["test"]
    # apptainer runs %test with plain /bin/sh: without -e only the last command would count
    assert test.lstrip().startswith("set -e")
    assert "hvd.mpi_built()" in test and "hpml --help" in test and "pip check" in test
    assert ("hvd.nccl_built()" in test) == (flavor == "gpu")


def test_gpu_base_image_is_pinned():
    image = deffile.load(DEFS["gpu"]).header["from"]
    assert re.fullmatch(r"nvidia/cuda:12\.2\.2-cudnn8-devel-ubuntu22\.04(@sha256:[0-9a-f]{64})?", image), image


def test_container_check_builds_the_cpu_definition_as_written():
    definition = deffile.load(DEFS["cpu"])
    assert definition.header["bootstrap"] == "debootstrap"
    assert definition.header["osversion"] == "bookworm" and definition.header["mirrorurl"].startswith("http")
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^container-check:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe and "containers/check.sh containers/hpml-cpu.def" in recipe.group(1)
    check = (CONTAINERS / "check.sh").read_text()
    # the same debootstrap call as Apptainer's debootstrap bootstrap (conveyorPacker_debootstrap.go)
    assert "--variant=minbase --exclude=openssl,udev,debconf-i18n,e2fsprogs --include=apt," in check
    # ... and reads everything else from the definition through the same parser as these tests
    assert re.search(r'^def\(\) \{ "\$PY" "\$REPO/containers/deffile.py" "\$DEF" "\$@"; \}$', check, re.M)
    for query in ("header osversion", "header mirrorurl", "header include", "files"):
        assert f"def {query}" in check, f"check.sh does not take {query} from the definition"
    for section in ("post", "environment", "test"):
        assert f"def section {section}" in check, f"check.sh does not run %{section} from the definition"


def test_deffile_reads_apptainer_syntax():
    text = """# a comment
Bootstrap: debootstrap
OSVersion:  bookworm
MirrorURL: http://deb.debian.org/debian

%files
    setup.py /opt/src/setup.py   # trailing comment
    hpml
%post -c /bin/bash
    echo "%not a section"
%test
    set -e
"""
    d = deffile.parse(text)
    assert d.header == {
        "bootstrap": "debootstrap",
        "osversion": "bookworm",
        "mirrorurl": "http://deb.debian.org/debian",
    }
    assert d.files() == [("setup.py", "/opt/src/setup.py"), ("hpml", "")]
    assert d.section_args["post"] == "-c /bin/bash" and d.sections["post"].strip() == 'echo "%not a section"'
    with pytest.raises(ValueError, match="Bootstrap"):
        deffile.parse("From: x\n%post\n  true\n")


def test_install_script_refuses_a_package_the_base_holds(tmp_path):
    """Should a held package ever enter the list, install.sh stops with a clear message before apt does."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "apt-mark").write_text("#!/bin/sh\necho openmpi-bin\n")  # pretend the base holds it
    (stubs / "apt-get").write_text(f"#!/bin/sh\ntouch {tmp_path}/apt-ran\nexit 99\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(INSTALL_SH), "cpu"], capture_output=True, text=True, env={"PATH": f"{stubs}:/usr/bin:/bin"}
    )
    assert proc.returncode == 1 and "holds openmpi-bin" in proc.stderr, proc.stderr
    assert not (tmp_path / "apt-ran").exists()
