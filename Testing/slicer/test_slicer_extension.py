"""The Slicer extension's packaging: CMake lists, metadata, catalog entry, icon, .ui bindings, dependencies."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import py_compile
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "HyperSORT"
LIBRARY = REPO / "HyperSORTLib"
RAW_PREFIX = "https://raw.githubusercontent.com/hypersort/SlicerHyperSORT/main/"


def _cmake_list(text: str, name: str) -> list[str]:
    match = re.search(rf"set\({name}\s+(.*?)\)", text, re.S)
    assert match, f"{name} is not set"
    return [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def _files(root: Path, python: bool) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and (p.suffix == ".py") == python and p.suffix != ".pyc"}


def test_module_cmake_lists_every_python_file_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = {s.replace("${MODULE_NAME}", "HyperSORT") for s in _cmake_list(text, "MODULE_PYTHON_SCRIPTS")}
    resources = set(_cmake_list(text, "MODULE_PYTHON_RESOURCES"))
    library = set(_cmake_list(text, "HYPERSORTLIB_PYTHON_SCRIPTS"))
    library_resources = set(_cmake_list(text, "HYPERSORTLIB_PYTHON_RESOURCES"))
    assert sorted(_files(MODULE, python=True) - scripts) == [], "add these to MODULE_PYTHON_SCRIPTS"
    assert sorted(scripts - _files(MODULE, python=True)) == [], "listed but missing"
    assert sorted(_files(MODULE / "Resources", python=False) - {r.removeprefix("Resources/") for r in resources}) == []
    assert all((MODULE / r).is_file() for r in resources)
    assert sorted(_files(LIBRARY, python=True) - library) == [], "add these to HYPERSORTLIB_PYTHON_SCRIPTS"
    assert sorted(library - _files(LIBRARY, python=True)) == [], "listed but missing"
    assert sorted(_files(LIBRARY, python=False) - library_resources) == [], "add to HYPERSORTLIB_PYTHON_RESOURCES"
    assert "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)
    assert "SOURCE_DIR ${PROJECT_SOURCE_DIR}/HyperSORTLib" in text
    assert not re.search(r"file\s*\(\s*GLOB", text, re.I)


def test_extension_metadata_and_catalog_entry():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(HyperSORT\)", text, re.M)
    meta = dict(re.findall(r'set\((EXTENSION_\w+) "([^"]*)"\)', text))
    assert meta["EXTENSION_DEPENDS"] == "PyTorch"
    assert meta["EXTENSION_HOMEPAGE"].startswith("https://github.com/")
    for url in [meta["EXTENSION_ICONURL"], *meta["EXTENSION_SCREENSHOTURLS"].split()]:
        assert url.startswith(RAW_PREFIX), url
        assert (REPO / url.removeprefix(RAW_PREFIX)).is_file(), url
    assert "add_subdirectory(HyperSORT)" in text
    for include in ("${Slicer_USE_FILE}", "${Slicer_EXTENSION_GENERATE_CONFIG}", "${Slicer_EXTENSION_CPACK}"):
        assert f"include({include})" in text

    entry = json.loads((REPO / "HyperSORT.json").read_text())
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["category"] == "Segmentation"
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["scm_url"].removesuffix(".git") == meta["EXTENSION_HOMEPAGE"]
    assert 1 <= entry["tier"] <= 5


def test_icons_are_128_pixel_pngs():
    for path in (MODULE / "Resources" / "Icons" / "HyperSORT.png", REPO / "Resources" / "Icons" / "HyperSORT.png"):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (128, 128), path


def _parameter_fields() -> dict[str, str]:
    tree = ast.parse((MODULE / "HyperSORTModule" / "Parameter.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "HyperSORTParameterNode")
    assert any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in cls.decorator_list)
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_ui_binds_to_parameter_node_fields_and_widgets_exist():
    root = ET.parse(MODULE / "Resources" / "UI" / "HyperSORT.ui").getroot()
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
    fields = _parameter_fields()
    assert set(bound) <= set(fields), set(bound) - set(fields)
    assert set(fields) - set(bound) == {"previewLabelmap", "latent", "latentRun"}  # kept by the code, not widgets
    # each binding is one the parameter node wrapper can connect
    assert bound["runDirectory"] == "ctkPathLineEdit" and "pathlib.Path" in fields["runDirectory"]
    for name in ("device", "colorBy"):
        assert bound[name] == "QComboBox" and "Choice" in fields[name]
    assert bound["previewSpacing"] == "QDoubleSpinBox" and "float" in fields["previewSpacing"]
    assert {bound[n] for n in ("dragProbe", "livePreview", "previewFullResolution", "updateOnRelease")} == {"QCheckBox"}
    assert bound["inputVolume"] == "qMRMLNodeComboBox" and bound["outputSegmentation"] == "qMRMLNodeComboBox"
    custom = {c.find("class").text for c in root.iter("customwidget")}
    standard = {"QLabel", "QComboBox", "QDoubleSpinBox", "QSpinBox", "QCheckBox", "QPushButton", "QWidget",
                "QProgressBar", "QLineEdit", "QTableWidget"}
    assert set(widgets.values()) <= custom | standard
    receivers = {c.find("receiver").text for c in root.iter("connection")}
    assert {"inputVolumeSelector", "outputSegmentationSelector", "plotWidget"} <= receivers
    used = {name for panel in ("Widget.py", "ReviewPanel.py")
            for name in re.findall(r"\bui\.(\w+)", (MODULE / "HyperSORTModule" / panel).read_text())}
    used |= set(re.findall(r"\.ui\.(\w+)", (MODULE / "HyperSORT.py").read_text()))
    assert used - set(widgets) == set(), "referenced in code but absent from the .ui"


def _requirements(lines) -> dict[str, str]:
    from packaging.requirements import Requirement

    return {Requirement(line).name.lower(): str(Requirement(line).specifier) for line in lines}


def test_slicer_requirements_follow_the_package_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = {k: v for k, v in _requirements(project).items() if k not in {"torch", "numpy", "scipy"}}
    lines = [line.split("#")[0].strip() for line in (MODULE / "Resources" / "requirements.txt").read_text().splitlines()]
    listed = _requirements([line for line in lines if line])
    assert listed == expected
    assert all(spec.startswith(">=") for spec in listed.values())  # minimums, never pins
    torch_min = _requirements([l for l in project if l.startswith("torch")])["torch"]
    assert _install_logic().TORCH_MINIMUM == torch_min


def _install_logic():
    import importlib
    import sys

    if str(MODULE) not in sys.path:
        sys.path.insert(0, str(MODULE))
    return importlib.import_module("HyperSORTModule.InstallLogic")


@pytest.mark.parametrize("has_pip_ensure", [True, False])
def test_dependencies_install_torch_through_the_pytorch_extension_then_the_rest(monkeypatch, has_pip_ensure):
    import sys
    import types

    logic = _install_logic()
    calls = []
    torch_utils = types.ModuleType("PyTorchUtils")
    torch_utils.PyTorchUtilsLogic = lambda: types.SimpleNamespace(
        installTorch=lambda **kw: calls.append(("installTorch", kw)) or object())
    slicer = types.ModuleType("slicer")
    slicer.util = types.SimpleNamespace(confirmOkCancelDisplay=lambda *a, **k: True)
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    if has_pip_ensure:
        pydeps = types.ModuleType("slicer.pydeps")
        pydeps.load_requirements = lambda path: logic.readRequirements(Path(path))
        pydeps.pip_ensure = lambda reqs, **kw: calls.append(
            ("pip_ensure", reqs, Path(kw["constraints"]).read_text().splitlines()))
        slicer.pydeps = pydeps
        monkeypatch.setitem(sys.modules, "slicer.pydeps", pydeps)
    else:
        monkeypatch.setitem(sys.modules, "slicer.pydeps", None)  # Slicer < 5.11: no slicer.pydeps
    monkeypatch.setitem(sys.modules, "PyTorchUtils", torch_utils)
    monkeypatch.setattr(logic, "torchReady", lambda: False)
    monkeypatch.setattr(logic, "missingRequirements", lambda reqs: ["nibabel>=5"])
    monkeypatch.setattr(logic, "runPip", lambda command, onOutput=None, env=None: calls.append(
        ("runPip", command, Path(command[command.index("--constraint") + 1]).read_text().splitlines())))
    ran = []
    logic.ensureDependencies(askConfirmation=False, runner=lambda compute: ran.append(1) or compute())
    torch_pin = f"torch=={importlib.metadata.version('torch')}"
    assert calls[0] == ("installTorch", {"askConfirmation": False, "torchVersionRequirement": logic.TORCH_MINIMUM})
    if has_pip_ensure:
        assert calls[1][:2] == ("pip_ensure", logic.readRequirements())
    else:
        assert calls[1][1][-1] == "nibabel>=5" and ran == [1]  # in the runner, beside the event loop
    assert torch_pin in calls[1][2]


HEAVY = {"torch", "monai", "HyperSORTLib", "nibabel", "sklearn", "scipy", "matplotlib", "safetensors"}
QT = {"qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "slicer.i18n"}
QT_FREE = {"CoreLogic", "LatentMapPlot", "VolumeNodes", "SegmentationNodes", "OutputNodes", "Debounce", "StandaloneScene", "Errors",
           "SelfTest", "Signal", "LogicInterface", "Compatibility", "ReviewLogic", "Jobs"}


def _top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(MODULE.rglob("*.py")), ids=lambda p: p.relative_to(MODULE).as_posix())
def test_module_files_compile_and_import_nothing_heavy_at_load(path):
    py_compile.compile(str(path), doraise=True)
    imports = _top_level_imports(path)
    assert not {name for name in imports if name.split(".")[0] in HEAVY}, "import inside the functions that need it"
    if path.stem in QT_FREE:
        assert not {name for name in imports if name in QT or name.split(".")[0] in {"qt", "ctk"}}
        assert not any(name.endswith(("Widget", "QtSupport", "Parameter", "InstallLogic")) for name in imports)


def test_packaged_self_test_run_is_current_and_small():
    import sys

    if str(MODULE) not in sys.path:
        sys.path.insert(0, str(MODULE))
    from HyperSORTLib import RUN_FORMAT_VERSION
    from HyperSORTModule import SelfTest

    folder = SelfTest.PACKAGED_RUN
    assert sorted(p.name for p in folder.iterdir()) == sorted(SelfTest.PACKAGED_FILES)
    doc = json.loads((folder / "config.json").read_text())
    assert doc["format_version"] == RUN_FORMAT_VERSION, (
        "the packaged run is of an older run format: run 'python -m HyperSORTModule.SelfTest' from HyperSORT/")
    assert sum(p.stat().st_size for p in folder.iterdir()) < 512 * 1024
