"""The library and the module's Qt-free files on the oldest Python the extension claims (Slicer 5.8: 3.9).

The interpreter is ``$HYPERSORT_OLDEST_PYTHON`` or a ``python3.9`` found on the machine; the test
skips when there is none. In that interpreter every file of ``HyperSORTLib/`` and ``HyperSORT/``
must compile, every library module must import (a third-party package missing from that
interpreter, such as torch, is reported and tolerated; any other error fails), and the bundled
training configurations must parse into the same configurations as here.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HyperSORT"))

from HyperSORTModule.Compatibility import MINIMUM_PYTHON, unsupportedReason  # noqa: E402

from HyperSORTLib.config import RunConfig  # noqa: E402

PROBE = r"""
import importlib, json, pathlib, sys
root = pathlib.Path(sys.argv[1])
sys.path.insert(0, str(root))
sys.path.insert(0, str(root / "HyperSORT"))
report = {"version": list(sys.version_info[:2]), "compile_errors": [], "import_errors": [], "missing": {},
          "configs": {}}
for path in sorted(list((root / "HyperSORTLib").rglob("*.py")) + list((root / "HyperSORT").rglob("*.py"))):
    try:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    except SyntaxError as error:
        report["compile_errors"].append(f"{path.relative_to(root)}:{error.lineno}: {error.msg}")
modules = ["HyperSORTModule.Compatibility"]
for path in sorted((root / "HyperSORTLib").rglob("*.py")):
    parts = path.relative_to(root).with_suffix("").parts
    modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
for name in modules:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in ("HyperSORTLib", "HyperSORTModule"):
            report["import_errors"].append(f"{name}: {error!r}")
        else:
            report["missing"][name] = error.name
    except Exception as error:
        report["import_errors"].append(f"{name}: {error!r}")
from HyperSORTLib.config import RunConfig
for path in sorted((root / "training" / "configs").glob("*.yaml")):
    try:
        report["configs"][path.name] = RunConfig.from_file(path).to_dict()
    except ModuleNotFoundError:  # no PyYAML in that interpreter: parse the dictionary form instead
        report["configs"][path.name] = None
report["dict_config"] = RunConfig.from_dict({"data": {"spacing": None}, "train": {"epochs": 3}}).to_dict()
print(json.dumps(report))
"""


def _oldest_python() -> str | None:
    candidates = [os.environ.get("HYPERSORT_OLDEST_PYTHON"), shutil.which("python3.9"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))]
    wanted = ".".join(str(v) for v in MINIMUM_PYTHON)
    for candidate in filter(None, candidates):
        try:
            found = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if found.returncode == 0 and found.stdout.strip() == wanted:
            return candidate
    return None


@pytest.fixture(scope="module")
def oldest_report():
    python = _oldest_python()
    if python is None:
        pytest.skip(f"no Python {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} interpreter here "
                    "(set HYPERSORT_OLDEST_PYTHON to one)")
    done = subprocess.run([python, "-c", PROBE, str(ROOT)], capture_output=True, text=True, timeout=120,
                          cwd=str(ROOT), env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, f"{python} could not run the probe:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_file_compiles_and_every_module_imports_on_the_oldest_python(oldest_report):
    assert oldest_report["version"] == list(MINIMUM_PYTHON)
    assert oldest_report["compile_errors"] == []
    assert oldest_report["import_errors"] == [], "modules failing on the oldest Python (not a missing package)"
    assert "HyperSORTModule.Compatibility" not in oldest_report["missing"]
    assert "HyperSORTLib.config" not in oldest_report["missing"]


def test_configurations_parse_the_same_on_the_oldest_python(oldest_report):
    for name, parsed in oldest_report["configs"].items():
        if parsed is not None:
            assert parsed == json.loads(json.dumps(RunConfig.from_file(ROOT / "training" / "configs" / name)
                                                   .to_dict())), name
    expected = RunConfig.from_dict({"data": {"spacing": None}, "train": {"epochs": 3}}).to_dict()
    assert oldest_report["dict_config"] == json.loads(json.dumps(expected))


@pytest.mark.parametrize("slicer,python,supported", [
    ((5, 6), (3, 9), False), ((5, 8), (3, 9), True), ((5, 10), (3, 12), True), ((6, 0), (3, 13), True),
    ((5, 8), (3, 8), False)])
def test_supported_slicer_versions_are_declared_with_a_clear_message(slicer, python, supported):
    reason = unsupportedReason(slicer, python)
    assert (reason is None) == supported
    if not supported:
        assert "Slicer 5.8 or later" in reason and f"Slicer {slicer[0]}.{slicer[1]}" in reason
