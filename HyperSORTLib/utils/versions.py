"""The software a result was computed with, recorded beside it (``metrics.json``,
``provenance.json``) so that a figure can be traced to the code and libraries that gave it."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("torch", "numpy", "monai", "scikit-learn", "nibabel")


@functools.lru_cache(maxsize=1)
def code_version() -> str | None:
    """The git commit of the source checkout HyperSORT runs from (``-dirty`` with local changes),
    or ``None`` for an installed copy outside git."""
    source = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "--",
                                str(source)], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else (commit or None)


def software_versions() -> dict[str, Any]:
    """HyperSORT's version and code commit, Python's, those of the libraries results depend on, and
    PyTorch's intra-op thread count (``torch_threads``): a different number of threads sums
    floating-point partial products in a different order, so a training run repeats exactly only at
    the thread count it was trained with."""
    import torch

    from HyperSORTLib import __version__

    versions: dict[str, Any] = {"hypersort": __version__, "code": code_version(),
                                "python": platform.python_version(), "torch_threads": torch.get_num_threads()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
