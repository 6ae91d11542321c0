"""hpml: SLURM/Horovod training pipeline for COVID-19 chest X-ray classification.

The pins below are the single source of truth for versions (the Makefile reads the
TensorFlow pin from here). They are the stack verified in docs/stack.md: Horovod 0.28.1
does not work with Keras 3, so TensorFlow stays on 2.15.

Two installs: without extras (`pip install .`, or the wheel) the login node's: submit, status,
sweep report, efficiency, config show, weights fetch, covidx, synth; no TensorFlow, Horovod or MPI.
`[train]` adds what preprocessing, training, evaluation, prediction, export and the benchmarks run
with. `dev` is what the tests and the linter add; `make install` installs `.[train,dev]`.
tests/unit/test_packaging.py checks that these lists are exactly what hpml/, preprocess/ and tests/ import.
"""

import os
import re
import shutil
import subprocess
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

# The login node's commands: everything but TensorFlow, Horovod and MPI.
REQUIRES = [
    "numpy>=1.26,<2",  # < 2: the same numpy as TensorFlow 2.15's, whichever install came first
    "opencv-python-headless==4.11.0.86",
    "pyyaml==6.0.2",
    "pydicom==3.0.1",
    # pydicom's pixel decoders, declared rather than left to matplotlib's Pillow: Pillow for
    # JPEG Baseline (the real RSNA files) and JPEG 2000, pylibjpeg-libjpeg for JPEG Lossless.
    # These pylibjpeg versions are the newest that accept numpy < 2 (TensorFlow 2.15).
    "pillow==13.0.0",
    "pylibjpeg==2.1.0",
    "pylibjpeg-libjpeg==2.2.0",
    "pylibjpeg-openjpeg==2.3.0",
    "pandas==2.2.3",  # the SIRM source's COVID.metadata.xlsx (pandas.read_excel) ...
    "openpyxl==3.1.5",  # ... through openpyxl, which `hpml synth` also writes it with
    "matplotlib==3.9.4",  # `hpml sweep report`'s curves (and evaluation's plots)
    "tqdm==4.67.1",
]
EXTRAS = {
    # Preprocessing, training, evaluation, predict, export, bench: the compute nodes' install.
    "train": [
        TENSORFLOW,
        HOROVOD,
        "mpi4py==4.1.1",
        "scipy==1.17.1",  # McNemar (hpml.evaluation.compare) and t intervals (hpml.bench.rounds)
        "h5py==3.16.0",  # `hpml weights import` reads the seed's .hdf5 (TensorFlow requires h5py too)
        "tensorboard==2.15.2",  # HParams sessions (hpml.train.hparams); TensorFlow 2.15 requires it too
    ],
    # train.tracker: mlflow (hpml.train.tracking), imported only when asked. 3.17.2: up to 3.9 mlflow-skinny
    # requires packaging<26 (2.17.2: <25; dev pins 26.4). Beside TensorFlow 2.15 (protobuf<5) pip picks
    # opentelemetry-proto 1.27.0 and changes no installed version; alone it would upgrade protobuf.
    "tracking": ["mlflow-skinny==3.17.2"],
    # Tests and lint. scikit-learn and statsmodels: independent references the tests compare
    # hpml's metrics, curves, intervals and McNemar test with (statsmodels 0.15.0 installs with numpy 1.26).
    "dev": [
        "pytest==8.3.4",
        "pytest-timeout==2.3.1",
        "ruff==0.8.6",
        "packaging==26.4",
        "scikit-learn==1.5.2",
        "statsmodels==0.15.0",
        "mlflow-skinny==3.17.2",  # the tracking extra's, for tests/unit/test_tracking.py
    ],
}


def git_commit(here: Path) -> str:
    """The commit a build is made from, when it is made from a git checkout."""
    if not (here / ".git").exists():
        return "unknown"
    try:
        proc = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


class BuildWithJobFiles(build_py):
    """Ship jobs/, configs/*.yaml and configs/clusters/ inside the package (hpml/_jobfiles/):
    `hpml submit` renders them and `hpml demo` runs configs/demo.yaml, also where hpml is
    installed from a wheel without the checkout. hpml/_build.py records the commit built
    (`hpml --version`)."""

    def run(self):
        super().run()
        here = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "hpml" / "_jobfiles"
        for src, dst, pattern in (
            ("jobs", "jobs", "*"),
            ("configs/clusters", "clusters", "*.yaml"),
            ("configs", "configs", "*.yaml"),
        ):
            (target / dst).mkdir(parents=True, exist_ok=True)
            for path in sorted((here / src).glob(pattern)):
                shutil.copy2(path, target / dst / path.name)
        build = Path(self.build_lib) / "hpml" / "_build.py"
        build.write_text(f'"""Written by setup.py at build time."""\n\nCOMMIT = "{git_commit(here)}"\n')


setup(
    name="hpml",
    version=VERSION,
    description="COVID-Net style chest X-ray classification on SLURM with MPI and Horovod",
    license="Apache-2.0",
    classifiers=["License :: OSI Approved :: Apache Software License", "Programming Language :: Python :: 3.11"],
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["hpml", "hpml.*", "preprocess", "preprocess.*"]),
    package_data={"hpml": ["py.typed"]},
    install_requires=REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["hpml=hpml.cli.main:main"]},
    cmdclass={"build_py": BuildWithJobFiles},
)
