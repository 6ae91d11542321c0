"""hpml: SLURM/Horovod training pipeline for COVID-19 chest X-ray classification.

The pins below are the single source of truth for versions (the Makefile reads the
TensorFlow pin from here). They are the stack verified in docs/stack.md: Horovod 0.28.1
does not work with Keras 3, so TensorFlow stays on 2.15.
"""

import os
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# CPU by default; GPU nodes and the GPU container install with HPML_TENSORFLOW=gpu, which
# swaps in the CUDA build of the same TensorFlow (an extra cannot replace tensorflow-cpu).
TENSORFLOW = {
    "cpu": "tensorflow-cpu==2.15.1",
    "gpu": "tensorflow[and-cuda]==2.15.1",
    # The same GPU build without NVIDIA's pip copies of CUDA/cuDNN, for systems that have
    # CUDA 12.2 + cuDNN 8.9 already (the GPU container's CUDA base image).
    "system-cuda": "tensorflow==2.15.1",
}[os.environ.get("HPML_TENSORFLOW", "cpu")]
HOROVOD = "horovod==0.28.1"
# The version lives in hpml/__init__.py (`hpml.__version__`); read, not imported: nothing is installed yet.
_INIT = (Path(__file__).resolve().parent / "hpml" / "__init__.py").read_text()
VERSION = re.search(r'^__version__ = "(.+)"$', _INIT, re.M)[1]


class BuildWithJobFiles(build_py):
    """Ship jobs/ and configs/clusters/ inside the package (hpml/_jobfiles/): `hpml submit`
    renders them, also where hpml is installed from a wheel without the checkout."""

    def run(self):
        super().run()
        here = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "hpml" / "_jobfiles"
        for src, dst, pattern in (("jobs", "jobs", "*"), ("configs/clusters", "clusters", "*.yaml")):
            (target / dst).mkdir(parents=True, exist_ok=True)
            for path in sorted((here / src).glob(pattern)):
                shutil.copy2(path, target / dst / path.name)


setup(
    name="hpml",
    version=VERSION,
    description="COVID-Net style chest X-ray classification on SLURM with MPI and Horovod",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["hpml", "hpml.*", "preprocess", "preprocess.*"]),
    package_data={"hpml": ["py.typed"]},
    install_requires=[
        TENSORFLOW,
        "numpy>=1.26,<2",
        HOROVOD,
        "mpi4py==4.1.1",
        "opencv-python-headless==4.11.0.86",
        "pandas==2.2.3",
        "scipy==1.17.1",  # McNemar (hpml.evaluation.compare) and t intervals (hpml.bench.rounds)
        "scikit-learn==1.5.2",
        "pyyaml==6.0.2",
        "pydicom==3.0.1",
        # pydicom's pixel decoders, declared rather than left to matplotlib's Pillow: Pillow for
        # JPEG Baseline (the real RSNA files) and JPEG 2000, pylibjpeg-libjpeg for JPEG Lossless.
        # These pylibjpeg versions are the newest that accept numpy < 2 (TensorFlow 2.15).
        "pillow==13.0.0",
        "pylibjpeg==2.1.0",
        "pylibjpeg-libjpeg==2.2.0",
        "pylibjpeg-openjpeg==2.3.0",
        "openpyxl==3.1.5",  # the SIRM source's COVID.metadata.xlsx (pandas.read_excel)
        "matplotlib==3.9.4",
        "tqdm==4.67.1",
    ],
    extras_require={
        # statsmodels: the independent reference for the evaluation's intervals and McNemar test
        # (tests only; 0.15.0 installs with numpy 1.26).
        "dev": ["pytest==8.3.4", "pytest-timeout==2.3.1", "ruff==0.8.6", "spython==0.3.14", "statsmodels==0.15.0"]
    },
    entry_points={"console_scripts": ["hpml=hpml.cli.main:main"]},
    cmdclass={"build_py": BuildWithJobFiles},
)
