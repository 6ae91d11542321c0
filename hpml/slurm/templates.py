"""Where the job templates (jobs/) and cluster profiles (configs/clusters/) are.

In a checkout (or an editable install) they are read from the repository. A wheel or a
plain `pip install .` (for example inside the Apptainer image) carries copies as package
data under hpml/_jobfiles/, put there by setup.py's build step.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # hpml/
_CHECKOUT = _PACKAGE.parent
_PACKAGED = _PACKAGE / "_jobfiles"


def repository() -> Path | None:
    """The source checkout hpml runs from, or None for an installed copy."""
    return _CHECKOUT if (_CHECKOUT / "jobs" / "train.sbatch").is_file() else None


def jobs_dir() -> Path:
    repo = repository()
    return repo / "jobs" if repo else _PACKAGED / "jobs"


def profiles_dir() -> Path:
    repo = repository()
    return repo / "configs" / "clusters" if repo else _PACKAGED / "clusters"
