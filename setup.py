"""hpml: SLURM/Horovod training pipeline for COVID-19 chest X-ray classification.

The pins below are the single source of truth for versions (the Makefile reads the
TensorFlow pin from here). They are the stack verified in docs/stack.md: Horovod 0.28.1
does not work with Keras 3, so TensorFlow stays on 2.15.
"""

import os

from setuptools import setup

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

setup(
    name="hpml",
    version="0.1.0",
    description="COVID-Net style chest X-ray classification on SLURM with MPI and Horovod",
    python_requires=">=3.11,<3.12",
    packages=["hpml", "preprocess"],
    package_data={"hpml": ["py.typed"]},
    install_requires=[
        TENSORFLOW,
        "numpy>=1.26,<2",
        HOROVOD,
        "mpi4py==4.1.1",
        "opencv-python-headless==4.11.0.86",
        "pandas==2.2.3",
        "scikit-learn==1.5.2",
        "pyyaml==6.0.2",
        "pydicom==3.0.1",
        "matplotlib==3.9.4",
        "tqdm==4.67.1",
    ],
    extras_require={
        "dev": ["pytest==8.3.4", "pytest-timeout==2.3.1", "ruff==0.8.6", "spython==0.3.14"],
    },
    entry_points={"console_scripts": ["hpml=hpml.cli:main"]},
)
