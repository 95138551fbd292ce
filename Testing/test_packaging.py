"""The wheel (``pip install hypersort``, not editable) ships everything the commands need.

The wheel is built from a copy of the files the build reads (so the checkout gets no ``build/`` or
``.egg-info``), with pip and the installed setuptools, offline: ``pip wheel --no-deps
--no-build-isolation``. Its file list must hold every module of the library, its YAML resources, the
web explorer's front end (``HyperSORT/HyperSORTExplore``) and the Slicer module's Logic it drives
(``HyperSORT/HyperSORTModule``), as top-level packages, and the ``hypersort`` command.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: What the build reads (pyproject's readme and license included).
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "HyperSORTLib", "HyperSORT")


def _expected(folder: str, package: str, patterns=("*.py",)) -> set[str]:
    root = REPO / folder
    return {f"{package}/{path.relative_to(root).as_posix()}" for pattern in patterns for path in root.rglob(pattern)
            if "__pycache__" not in path.parts}


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed (the build backend of pyproject.toml)")
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--quiet", "--wheel-dir", str(out), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"pip wheel failed for {REPO / 'pyproject.toml'}:\n{build.stdout}\n{build.stderr}"
    wheels = list(out.glob("hypersort-*.whl"))
    assert len(wheels) == 1, f"expected one hypersort wheel in {out}, found {[w.name for w in out.iterdir()]}"
    with zipfile.ZipFile(wheels[0]) as archive:
        names = set(archive.namelist())
        entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        return names | {"entry_points: " + archive.read(n).decode() for n in entry_points}


@pytest.mark.slow
def test_the_wheel_ships_the_library_and_its_resources(wheel_files):
    expected = _expected("HyperSORTLib", "HyperSORTLib", ("*.py", "*.yaml"))
    assert expected and not expected - wheel_files, (
        f"the wheel lacks {sorted(expected - wheel_files)}; see [tool.setuptools] in {REPO / 'pyproject.toml'}")
    entry_points = "".join(n for n in wheel_files if n.startswith("entry_points: "))
    assert "hypersort = HyperSORTLib.cli:main" in entry_points, f"the hypersort command is missing: {entry_points!r}"


@pytest.mark.slow
def test_the_wheel_ships_the_web_explorer_front_end(wheel_files):
    expected = (_expected("HyperSORT/HyperSORTExplore", "HyperSORTExplore")
                | _expected("HyperSORT/HyperSORTModule", "HyperSORTModule"))
    assert "HyperSORTExplore/App.py" in expected and "HyperSORTModule/CoreLogic.py" in expected
    assert not expected - wheel_files, (
        f"the wheel lacks the front end of 'hypersort explore': {sorted(expected - wheel_files)}; see "
        f"[tool.setuptools.packages.find] in {REPO / 'pyproject.toml'}")
    assert not any(n.startswith(("HyperSORT/", "Testing/", "benchmarks/")) for n in wheel_files), (
        "the wheel holds files outside its packages")
