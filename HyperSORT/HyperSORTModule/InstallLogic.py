"""Python dependencies of the module inside Slicer (application only).

* torch comes from the PyTorch extension (``PyTorchUtils``), which picks the CUDA or CPU build
  that matches the user's driver; it is never installed with plain pip.
* The library's other needs (``Resources/requirements.txt``, ``>=`` minimums, no pins) come
  through ``slicer.packaging.pip_ensure`` on Slicer >= 5.12 (it asks, shows progress and offers
  a restart), or ``slicer.util.pip_install`` after a confirmation on older versions.
* Packages Slicer ships (numpy, scipy, SimpleITK, vtk) are never requested.

Nothing is installed without the user's consent, and nothing here runs at module load.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from HyperSORTModule.Errors import HyperSORTError

TORCH_MINIMUM = ">=2.2"
REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"


def readRequirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement strings of a requirements file (comments and blank lines dropped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def isSatisfied(requirement: str) -> bool:
    """Whether an installed distribution satisfies ``requirement``."""
    from packaging.requirements import Requirement

    parsed = Requirement(requirement)
    try:
        installed = importlib.metadata.version(parsed.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return parsed.specifier.contains(installed, prereleases=True)


def missingRequirements(requirements: list[str]) -> list[str]:
    return [requirement for requirement in requirements if not isSatisfied(requirement)]


def torchReady() -> bool:
    return importlib.util.find_spec("torch") is not None and isSatisfied(f"torch{TORCH_MINIMUM}")


def ensureTorch(askConfirmation: bool = True) -> None:
    """Install torch through the PyTorch extension if it is missing (after asking)."""
    if torchReady():
        return
    import slicer

    try:
        import PyTorchUtils
    except ModuleNotFoundError as error:
        raise HyperSORTError("HyperSORT needs the PyTorch extension: install 'PyTorch' from the Extensions Manager, "
                             "restart Slicer and try again.") from error
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            "HyperSORT needs PyTorch. It will be installed now by the PyTorch extension (the CUDA or CPU build "
            "that matches this computer); this can take several minutes.", windowTitle="HyperSORT"):
        raise HyperSORTError("PyTorch was not installed; HyperSORT cannot segment without it.")
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=TORCH_MINIMUM)
    if torch is None:
        raise HyperSORTError("Installing PyTorch through the PyTorch extension failed; see the Python console, or "
                             "install it from the PyTorch Utils module.")


def ensureLibraryRequirements(askConfirmation: bool = True) -> None:
    """Install the library's other requirements if any is missing (after asking)."""
    import slicer

    requirements = readRequirements()
    if not missingRequirements(requirements):
        return
    try:
        import slicer.packaging as packaging
    except ImportError:
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        try:
            packaging.pip_ensure(requirements, prompt_install=askConfirmation, requester="HyperSORT")
        except RuntimeError as error:  # declined
            raise HyperSORTError(f"The Python packages HyperSORT needs were not installed: {error}") from error
        return
    missing = missingRequirements(requirements)
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            "HyperSORT needs these Python packages, which will be installed now:\n\n" + "\n".join(missing),
            windowTitle="HyperSORT"):
        raise HyperSORTError("The Python packages HyperSORT needs were not installed: " + ", ".join(missing))
    try:
        slicer.util.pip_install(missing)
    except Exception as error:  # pip's failures (network, proxy, build) come as several types
        raise HyperSORTError("Installing " + ", ".join(missing) + f" failed ({error}). Behind a proxy, set "
                             "HTTPS_PROXY before starting Slicer, or run in Slicer's Python console: "
                             f"slicer.util.pip_install({missing!r})") from error


def ensureDependencies(askConfirmation: bool = True) -> None:
    """torch first (so pip never pulls a mismatched one as a dependency), then the rest."""
    ensureTorch(askConfirmation)
    ensureLibraryRequirements(askConfirmation)
