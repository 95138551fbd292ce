"""The module's self-test, run inside Slicer (``Slicer --testing``, or Reload and Test).

It uses the tiny run the extension ships (``Resources/SelfTest/TinyRun``) and a synthetic
oblique CT; it skips, saying why, where PyTorch or the library's other packages are missing
(build machines have no PyTorch extension).
"""

from __future__ import annotations

from pathlib import Path

import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from HyperSORTModule.ApplicationLogic import HyperSORTLogic


def skipReason():
    """Why the self-test cannot run here (PyTorch or another requirement missing), or None."""
    from HyperSORTModule import InstallLogic

    if not InstallLogic.torchReady():
        return f"PyTorch{InstallLogic.TORCH_MINIMUM} is not installed (install it with the PyTorch extension)."
    missing = InstallLogic.missingRequirements(InstallLogic.readRequirements())
    if missing:
        return "missing Python packages: " + ", ".join(missing) + " (press Load run once to install them)."
    return None


class HyperSORTTest(ScriptedLoadableModuleTest):
    """The whole flow inside Slicer on the packaged tiny run and a synthetic oblique CT; skipped without PyTorch."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        reason = skipReason()
        if reason is not None:
            self.delayDisplay(f"HyperSORT self-test skipped: {reason}")
            self.skipTest(reason)
        self.setUp()
        self.test_LogicFlow()
        self.setUp()
        self.test_PanelFlow()
        self.setUp()
        self.test_ReviewFlow()

    def _tinyRun(self) -> Path:
        """A copy of the packaged tiny run (no training on the build machine)."""
        from HyperSORTModule import SelfTest

        if not hasattr(self, "_run"):
            self._run = SelfTest.packagedRun(Path(slicer.app.temporaryPath) / "HyperSORTSelfTest" / "run")
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

    def test_ReviewFlow(self):
        import shutil

        from HyperSORTLib.analysis.review import read_review
        from HyperSORTModule import SelfTest

        run = Path(slicer.app.temporaryPath) / "HyperSORTSelfTest" / "reviewed"
        shutil.rmtree(run.parent / "reviewed", ignore_errors=True)
        shutil.copytree(self._tinyRun(), run)
        SelfTest.writeAuditTable(run)
        dataset = SelfTest.writeSphereDataset(run.parent / "dataset")
        logic = HyperSORTLogic()
        logic.loadRun(run, device="cpu")
        logic.review.start("self-test", dataset=str(dataset))
        self.assertEqual(logic.review.rows()[0].caseId, "case_004")
        self.delayDisplay("Showing the most suspicious case")
        shown = logic.review.loadCase("case_004")
        self.assertEqual(shown.modeNode.GetAttribute("HyperSORT.Point"), "main mode")
        self.assertEqual(logic.review.record("wrong", "self-test"), "case_002")
        self.assertEqual(read_review(run / "analysis" / "review.csv")["case_004"].verdict, "wrong")
        self.delayDisplay("Review flow passed")
