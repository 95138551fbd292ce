"""HyperSORT: audit a segmentation dataset's annotations on a latent map, segment any CT from any point of it.

The work is done in ``HyperSORTModule`` (one concern per file); this file holds the module's
metadata, the panel's life cycle, the application-side logic and the self-test.
"""

import importlib
import shutil
import sys
from pathlib import Path

import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# In a source checkout (module folder added to Slicer's module paths) the library sits next to
# the module folder; in the built extension it is installed beside this file.
_CHECKOUT = Path(__file__).resolve().parents[1]
if (_CHECKOUT / "HyperSORTLib" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
    sys.path.append(str(_CHECKOUT))

from HyperSORTModule.CoreLogic import HyperSORTCoreLogic  # noqa: E402
from HyperSORTModule.Parameter import HyperSORTParameterNode  # noqa: E402

README_URL = "https://github.com/hypersort/SlicerHyperSORT#the-slicer-module"
PAPER_URL = "https://arxiv.org/abs/2506.21430"


class HyperSORT(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("HyperSORT")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["HyperSORT contributors"]
        self.parent.helpText = _(
            "Explore how a dataset was annotated and segment the selected CT the way any part of it was "
            "annotated. Load a run trained with <code>hypersort train</code>: its training samples appear on a "
            "latent map (coloured by cluster or suspicion score when <code>hypersort analyze</code> was run). "
            "Click a sample to segment the CT with that sample's UNet, drag the probe across the map to watch "
            "the segmentation change, Accept to get a full-resolution segmentation, Compare two points "
            "(e.g. the main mode and a suspicious cluster).<br>"
            f'Method: <a href="{PAPER_URL}">HyperSORT: Self-Organising Robust Training with hyper-networks '
            "(MICCAI 2025)</a>. "
            f'Documentation: <a href="{README_URL}">README</a>.')
        self.parent.acknowledgementText = _(
            "This module implements the method of the HyperSORT paper (MICCAI 2025, arXiv 2506.21430). "
            "It builds on 3D Slicer, PyTorch (through the SlicerPyTorch extension) and MONAI.")


class HyperSORTWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: life cycle and parameter node; the wiring is in ``HyperSORTModule.Widget``."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.panel = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/HyperSORT.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = HyperSORTLogic()
        from HyperSORTModule.Widget import HyperSORTPanel

        self.panel = HyperSORTPanel(self.ui, self.logic, lambda: self._parameterNode)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic is not None:
            self.logic.previewDebouncer.cancel()
            self.logic.releaseDebouncer.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.logic.forgetNodes()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        if self.panel is not None:
            self.panel.applyParameters()

    def onReload(self) -> None:
        """Reload the split files too (developer mode), then the module itself."""
        for name in sorted((n for n in sys.modules if n == "HyperSORTModule" or n.startswith("HyperSORTModule.")),
                           key=lambda n: n.count(".")):
            importlib.reload(sys.modules[name])
        ScriptedLoadableModuleWidget.onReload(self)


class HyperSORTLogic(HyperSORTCoreLogic, ScriptedLoadableModuleLogic):
    """The core logic on ``slicer.mrmlScene``, with Qt timers for debouncing, segmentations in a worker
    thread beside the event loop, and the parameter node."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from HyperSORTModule.QtSupport import BackgroundRunner, QtTimerScheduler

        HyperSORTCoreLogic.__init__(self, slicer.mrmlScene, QtTimerScheduler())
        self.runner = BackgroundRunner()

    def getParameterNode(self):
        return HyperSORTParameterNode(super().getParameterNode())


class HyperSORTTest(ScriptedLoadableModuleTest):
    """The whole flow inside Slicer on a tiny run trained here and a synthetic oblique CT."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LogicFlow()
        self.setUp()
        self.test_PanelFlow()

    def _tinyRun(self) -> Path:
        from HyperSORTModule import InstallLogic, SelfTest

        if not InstallLogic.torchReady():
            self.fail("The HyperSORT self-test needs PyTorch: install it with the PyTorch extension first.")
        if not hasattr(self, "_run"):
            folder = Path(slicer.app.temporaryPath) / "HyperSORTSelfTest"
            shutil.rmtree(folder, ignore_errors=True)
            self.delayDisplay("Training a tiny HyperSORT run")
            self._run = SelfTest.trainTinyRun(folder, epochs=3)
        return self._run

    def _volume(self):
        from HyperSORTModule import SelfTest

        image, affine, _ = SelfTest.syntheticCT(oblique=True)
        return SelfTest.addVolumeNode(slicer.mrmlScene, image, affine, "HyperSORT test CT"), image, affine

    def _waitFor(self, condition, timeoutMs: int = 5000) -> bool:
        import time

        deadline = time.time() + timeoutMs / 1000.0
        while time.time() < deadline:
            slicer.app.processEvents()
            if condition():
                return True
            time.sleep(0.01)
        return condition()

    def test_LogicFlow(self):
        import numpy as np

        from HyperSORTModule import SegmentationNodes, VolumeNodes
        from HyperSORTModule.Errors import HyperSORTError

        run = self._tinyRun()
        volume, image, affine = self._volume()
        logic = HyperSORTLogic()
        logic.loadRun(run, device="cpu")
        logic.setInputVolume(volume)
        plot = logic.buildLatentMap()
        self.assertEqual(plot.viewNode.GetInteractionMode(), slicer.vtkMRMLPlotViewNode.InteractionModeMovePoints)

        self.delayDisplay("Dragging the probe (five edits of its table row)")
        table = plot.probeTable.GetTable()
        for value in np.linspace(-0.02, 0.02, 5):
            table.SetValueByName(0, "z1", vtk.vtkVariant(float(value)))
            table.Modified()
        self.assertEqual(logic.previewCount, 0)
        self.assertTrue(self._waitFor(lambda: logic.previewCount >= 1))
        self._waitFor(lambda: False, 400)
        self.assertEqual(logic.previewCount, 1)
        self.assertAlmostEqual(float(logic.plot.probe()[0]), 0.02)
        self.assertTrue(self._waitFor(lambda: logic.probeSegmentationNode is not None, 3000))

        self.delayDisplay("Accepting at full resolution")
        node = logic.acceptSegmentation(logic.samplePoint(logic.segmenter.case_ids[0]))
        segment = node.GetSegmentation().GetSegment("ball_b")
        matrix = vtk.vtkMatrix4x4()
        segment.GetRepresentation("Binary labelmap").GetImageToWorldMatrix(matrix)
        np.testing.assert_allclose(VolumeNodes.arrayFromMatrix(matrix), affine, atol=1e-6)
        counts = SegmentationNodes.segmentVoxelCounts(node, logic.classNames)
        self.assertGreater(counts["ball_b"], 0)

        self.delayDisplay("Comparing the main mode with a sample")
        nodeA, nodeB, summary = logic.compare(logic.mainMode(), logic.samplePoint(logic.segmenter.case_ids[5]))
        self.assertEqual([row.name for row in summary], ["ball_a", "ball_b"])

        user = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "My segmentation")
        user.GetSegmentation().AddEmptySegment("mine")
        written = logic.acceptSegmentation(logic.mainMode(), segmentationNode=user)
        self.assertIsNot(written, user)
        self.assertEqual(user.GetSegmentation().GetNumberOfSegments(), 1)
        with self.assertRaises(HyperSORTError):
            logic.acceptSegmentation(logic.samplePoint("not a case"))
        self.delayDisplay("Logic flow passed")

    def test_PanelFlow(self):
        run = self._tinyRun()
        volume, _, _ = self._volume()
        slicer.util.selectModule("HyperSORT")
        widget = slicer.util.getModuleWidget("HyperSORT")
        parameters = widget.logic.getParameterNode()
        parameters.runDirectory = run
        parameters.device = "cpu"
        parameters.inputVolume = volume
        widget.ui.loadRunButton.click()
        self.assertIsNotNone(widget.logic.segmenter, widget.ui.statusLabel.text)
        self.assertIs(widget.ui.plotWidget.mrmlPlotViewNode(), widget.logic.plot.viewNode)
        self.assertEqual(len(widget.panel.latentSliders), 2)
        widget.panel.latentSliders[0].value = widget.panel.latentSliders[0].value + 0.01
        self.assertTrue(self._waitFor(lambda: widget.logic.previewCount >= 1))
        widget.ui.acceptButton.click()
        self.assertIsNotNone(parameters.outputSegmentation)
        self.assertEqual(parameters.outputSegmentation.GetAttribute("HyperSORT.Role"), "segmentation")
        widget.ui.compareButton.click()
        self.assertIn("Dice", widget.ui.compareResultLabel.text)
        self.delayDisplay("Panel flow passed")
