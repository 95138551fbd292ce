"""Installing the module's requirements never replaces the installed torch (or what Slicer ships).

pip's own resolver runs (``--dry-run --report``, offline: ``--no-index`` on a folder of wheels
built here) with the constraints file and the command the module builds. The folder offers a
newer torch and two packages: one that accepts the installed torch and one that needs the newer
torch, the way ``monai`` pulls the newest torch.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "HyperSORT"
if str(MODULE) not in sys.path:
    sys.path.insert(0, str(MODULE))

from HyperSORTModule import InstallLogic  # noqa: E402
from HyperSORTModule.Errors import HyperSORTError  # noqa: E402

TORCH = importlib.metadata.version("torch")
#: pip without this machine's configuration (its indexes, find-links and constraints).
PIP_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, "PIP_CONFIG_FILE": os.devnull}


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal, valid pure-Python wheel (metadata only)."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    files = {f"{dist}/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: %s\n%s" % (
                 name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hypersort-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
                     f"{len(text.encode())}\n" for path, text in files.items()) + f"{dist}/RECORD,,\n"
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in {**files, f"{dist}/RECORD": record}.items():
            archive.writestr(member, text)
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    _wheel(folder, "torch", "99.0")
    _wheel(folder, "accepts-installed-torch", "1.0", ("torch>=2.0",))
    _wheel(folder, "needs-newest-torch", "1.0", ("torch>=99",))
    return folder


def _dry_run(requirements, index: Path, tmp_path: Path, constraints: bool = True):
    """Resolve ``requirements`` with the module's command; returns (pip's error or None, installs, output lines)."""
    constraint_file = InstallLogic.writeConstraints(tmp_path / "constraints.txt")
    command = InstallLogic.pipCommand(requirements, constraint_file, python=sys.executable,
                                      extraArgs=["--dry-run", "--no-index", "--find-links", str(index),
                                                 "--report", str(tmp_path / "report.json")])
    if not constraints:
        command[command.index("--constraint"):command.index("--constraint") + 2] = []
    lines, error = [], None
    try:
        InstallLogic.runPip(command, onOutput=lines.append, env=PIP_ENV)
    except HyperSORTError as failure:
        error = str(failure)
    report = json.loads((tmp_path / "report.json").read_text()) if error is None else {}
    installs = {item["metadata"]["name"]: item["metadata"]["version"] for item in report.get("install", [])}
    return error, installs, lines


def test_constraints_pin_the_installed_torch_and_the_packages_slicer_ships(tmp_path):
    lines = InstallLogic.writeConstraints(tmp_path / "c.txt").read_text().splitlines()
    assert f"torch=={TORCH}" in lines
    assert f"numpy=={importlib.metadata.version('numpy')}" in lines
    assert InstallLogic.constraintLines(("not-installed-anywhere",)) == []


def test_without_constraints_pip_would_replace_torch(index, tmp_path):
    error, installs, _ = _dry_run(["needs-newest-torch"], index, tmp_path, constraints=False)
    assert error is None
    assert installs.get("torch") == "99.0"  # what the constraints prevent


def test_resolved_set_keeps_the_installed_torch_and_pip_output_is_streamed(index, tmp_path):
    error, installs, lines = _dry_run(["accepts-installed-torch"], index, tmp_path)
    assert error is None
    assert installs == {"accepts-installed-torch": "1.0"}
    assert any("accepts-installed-torch" in line for line in lines)


def test_a_requirement_needing_another_torch_fails_instead_of_replacing_it(index, tmp_path):
    error, installs, _ = _dry_run(["needs-newest-torch"], index, tmp_path)
    assert installs == {}
    assert "torch, numpy, scipy, SimpleITK or vtk are kept" in error and "torch>=99" in error
