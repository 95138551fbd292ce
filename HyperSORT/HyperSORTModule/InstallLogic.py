"""Python dependencies of the module inside Slicer.

* torch comes from the PyTorch extension (``PyTorchUtils``), which picks the CUDA or CPU build
  that matches the user's driver; it is never installed with plain pip.
* The library's other needs (``Resources/requirements.txt``, ``>=`` minimums, no pins) are
  installed with a *constraints file* that pins the installed torch and the packages Slicer
  ships (numpy, scipy, SimpleITK, vtk) to their installed versions: pip may pick an older
  monai that accepts them, or fail with a message, but can never replace them (``monai`` alone
  would pull the newest torch, with CUDA wheels that may not match the driver).
* On Slicer >= 5.11 through ``slicer.pydeps.pip_ensure`` (it asks, shows progress); on older
  releases pip runs in a subprocess beside the event loop, its output streamed to the panel.

Nothing is installed without the user's consent, and nothing here runs at module load. The
functions that build the constraints and the pip command are plain Python (tested with pip's
own resolver in ``Testing/slicer/test_slicer_install.py``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from HyperSORTModule.Errors import HyperSORTError

#: monai >= 1.5 is the first release that accepts numpy 2 (Slicer 5.10+) and it needs torch >= 2.4.1.
TORCH_MINIMUM = ">=2.4.1"
REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
#: Installed packages no requirement may replace: the PyTorch extension's torch and what Slicer ships.
PROTECTED_PACKAGES = ("torch", "numpy", "scipy", "SimpleITK", "vtk")

OutputCallback = Callable[[str], None]


def readRequirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement strings of a requirements file (comments and blank lines dropped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def installedVersion(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def isSatisfied(requirement: str) -> bool:
    """Whether an installed distribution satisfies ``requirement``."""
    from packaging.requirements import Requirement

    parsed = Requirement(requirement)
    installed = installedVersion(parsed.name)
    return installed is not None and parsed.specifier.contains(installed, prereleases=True)


def missingRequirements(requirements: Sequence[str]) -> list[str]:
    return [requirement for requirement in requirements if not isSatisfied(requirement)]


def torchReady() -> bool:
    return importlib.util.find_spec("torch") is not None and isSatisfied(f"torch{TORCH_MINIMUM}")


def constraintLines(protected: Sequence[str] = PROTECTED_PACKAGES) -> list[str]:
    """``name==installed version`` for every installed protected package (absent ones are not constrained)."""
    return [f"{name}=={version}" for name in protected if (version := installedVersion(name)) is not None]


def writeConstraints(path: Path, protected: Sequence[str] = PROTECTED_PACKAGES) -> Path:
    """Write the constraints file that keeps the protected packages as installed."""
    path = Path(path)
    path.write_text("# Written by HyperSORT: installed packages pip must keep.\n"
                    + "".join(f"{line}\n" for line in constraintLines(protected)), encoding="utf-8")
    return path


def pipPython() -> str:
    """The interpreter whose packages pip changes (Slicer's ``PythonSlicer`` in the application)."""
    return shutil.which("PythonSlicer") or sys.executable


def pipCommand(requirements: Sequence[str], constraintsPath: Path, python: Optional[str] = None,
               extraArgs: Sequence[str] = ()) -> list[str]:
    """``python -m pip install --constraint FILE ...requirements``."""
    return [python or pipPython(), "-m", "pip", "install", "--constraint", str(constraintsPath), *extraArgs,
            *requirements]


def runPip(command: Sequence[str], onOutput: Optional[OutputCallback] = None, env: Optional[dict] = None) -> None:
    """Run pip (environment ``env``, default this one), handing each output line to ``onOutput``;
    a failure raises with pip's last lines."""
    lines: list[str] = []
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    for line in process.stdout:
        lines.append(line.rstrip())
        if onOutput is not None:
            onOutput(lines[-1])
    if process.wait() != 0:
        tail = "\n".join(lines[-12:])
        raise HyperSORTError(f"pip could not install the packages HyperSORT needs without replacing an installed "
                             f"package (torch, numpy, scipy, SimpleITK or vtk are kept as installed):\n{tail}")


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


def ensureLibraryRequirements(askConfirmation: bool = True, onOutput: Optional[OutputCallback] = None,
                              runner: Optional[Callable[[Callable[[], object]], object]] = None) -> None:
    """Install the library's other requirements if any is missing (after asking), keeping the
    protected packages as installed. ``runner`` runs the pip subprocess beside the event loop."""
    import slicer

    requirements = readRequirements()
    missing = missingRequirements(requirements)
    if not missing:
        return
    constraints = writeConstraints(Path(tempfile.mkdtemp(prefix="HyperSORT-")) / "constraints.txt")
    try:
        import slicer.pydeps as pydeps
    except ImportError:
        pydeps = None
    if pydeps is not None and hasattr(pydeps, "pip_ensure"):
        try:
            pydeps.pip_ensure(pydeps.load_requirements(str(REQUIREMENTS_FILE)), constraints=str(constraints),
                              prompt_install=askConfirmation, requester="HyperSORT")
        except Exception as error:  # declined, or pip failed
            raise HyperSORTError(f"The Python packages HyperSORT needs were not installed: {error}") from error
        return
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            "HyperSORT needs these Python packages, which will be installed now (the installed PyTorch, numpy, "
            "scipy, SimpleITK and VTK are kept):\n\n" + "\n".join(missing), windowTitle="HyperSORT"):
        raise HyperSORTError("The Python packages HyperSORT needs were not installed: " + ", ".join(missing))
    command = pipCommand(missing, constraints)
    try:
        if runner is None:
            runPip(command, onOutput)
        else:
            runner(lambda: runPip(command, onOutput))
    except OSError as error:
        raise HyperSORTError(f"Could not start pip ({error}). Behind a proxy, set HTTPS_PROXY before starting "
                             f"Slicer, or run in Slicer's Python console: slicer.util.pip_install({missing!r})"
                             ) from error


def ensureDependencies(askConfirmation: bool = True, onOutput: Optional[OutputCallback] = None,
                       runner=None) -> None:
    """torch first (so that it is what the constraints keep), then the rest."""
    ensureTorch(askConfirmation)
    ensureLibraryRequirements(askConfirmation, onOutput, runner)
