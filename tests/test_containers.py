"""The Apptainer definitions cannot be built here (no Apptainer, no GPU): parse and check them."""

import re

import pytest
from conftest import REPO
from spython.main.parse.parsers import SingularityParser

SETUP = (REPO / "setup.py").read_text()
TF_VERSION = re.search(r'"tensorflow-cpu==([\d.]+)"', SETUP).group(1)
HVD_VERSION = re.search(r'HOROVOD = "horovod==([\d.]+)"', SETUP).group(1)


def parse(name):
    (recipe,) = SingularityParser(str(REPO / "containers" / name)).recipe.values()
    return recipe, (REPO / "containers" / name).read_text()


@pytest.mark.parametrize("name", ["hpml.def", "hpml-cpu.def"])
def test_definition_sections_and_pins(name):
    recipe, text = parse(name)
    for section in ("%files", "%environment", "%post", "%test", "%runscript", "%labels"):
        assert re.search(rf"^{section}\b", text, re.M), section
    assert recipe.files == [". /opt/hpml"]
    install = "\n".join(recipe.install)
    assert f"horovod=={HVD_VERSION}" in install and "--no-build-isolation" in install
    assert "HOROVOD_WITH_MPI=1" in install and "HOROVOD_WITH_TENSORFLOW=1" in install
    assert "hvd.mpi_built()" in install  # the %test section checks the Horovod build
    assert "libpmix-dev" in install  # Open MPI with PMIx, for the host's srun --mpi=pmix
    assert "python3.11" in install


def test_gpu_image_uses_cuda_tensorflow_and_nccl():
    recipe, _ = parse("hpml.def")
    install = "\n".join(recipe.install)
    assert recipe.fromHeader.startswith("nvidia/cuda:12.") and "cudnn" in recipe.fromHeader
    assert f"tensorflow[and-cuda]=={TF_VERSION}" in install
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in install and "hvd.nccl_built()" in install
    assert "HPML_TENSORFLOW=gpu" in install  # installs this package against the CUDA TensorFlow


def test_cpu_image_uses_cpu_tensorflow():
    recipe, _ = parse("hpml-cpu.def")
    install = "\n".join(recipe.install)
    assert recipe.fromHeader.startswith("python:3.11")
    assert f"tensorflow-cpu=={TF_VERSION}" in install and "and-cuda" not in install
