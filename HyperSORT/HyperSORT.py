"""HyperSORT: audit a segmentation dataset's annotations on a latent map, segment any CT from any point of it.

The work is done in ``HyperSORTModule`` (one concern per file); this file holds the module's
metadata and the panel's life cycle.
"""

import importlib
import sys
from pathlib import Path

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

# In a source checkout the library sits next to the module folder; in the built extension it is
# installed beside this file.
_CHECKOUT = Path(__file__).resolve().parents[1]
if (_CHECKOUT / "HyperSORTLib" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
    sys.path.append(str(_CHECKOUT))

from HyperSORTModule.ApplicationLogic import HyperSORTLogic  # noqa: E402,F401 (Slicer finds <Module>Logic here)
from HyperSORTModule.ModuleTest import HyperSORTTest  # noqa: E402,F401 (and <Module>Test)

PAPER_URL = "https://arxiv.org/abs/2506.21430"


class HyperSORT(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("HyperSORT")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["HyperSORT contributors"]
        self.parent.helpText = _(
            "Audit how a dataset was annotated: load a run trained with <code>hypersort train</code>, explore its "
            "latent map, segment the CT the way any part of it was annotated, review the suspicious cases. "
            "Supports Slicer 5.8 and later. "
            f'Method: <a href="{PAPER_URL}">HyperSORT (MICCAI 2025)</a>.')
        self.parent.acknowledgementText = _(
            "Implements the HyperSORT paper (MICCAI 2025, arXiv 2506.21430); builds on 3D Slicer, PyTorch (through "
            "the SlicerPyTorch extension) and MONAI.")


class HyperSORTWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel's life cycle; the wiring is in ``HyperSORTModule.Widget``."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self.panel = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from HyperSORTModule.Compatibility import applicationReason

        reason = applicationReason()
        if reason is not None:  # an unsupported Slicer: say so instead of failing inside a run
            label = qt.QLabel(reason)
            label.wordWrap = True
            self.layout.addWidget(label)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/HyperSORT.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = HyperSORTLogic()
        from HyperSORTModule.Widget import HyperSORTPanel

        self.panel = HyperSORTPanel(self.ui, self.logic)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.panel.enter()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.panel is not None:
            self.panel.cleanup()

    def enter(self) -> None:
        if self.panel is not None:
            self.panel.enter()

    def exit(self) -> None:
        if self.panel is not None:
            self.panel.exit()

    def onSceneStartClose(self, caller, event) -> None:
        self.panel.sceneClosing()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.panel.enter()

    def onReload(self) -> None:
        """Reload the split files too (developer mode), then the module itself."""
        for name in sorted((n for n in sys.modules if n == "HyperSORTModule" or n.startswith("HyperSORTModule.")),
                           key=lambda n: n.count(".")):
            importlib.reload(sys.modules[name])
        ScriptedLoadableModuleWidget.onReload(self)
