"""Requests that arrive while a segmentation computes (the application keeps its event loop
running): Accept during a preview cancels the preview and proceeds; closing the scene cancels the
running job, which then writes nothing (real MRML scene)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from HyperSORTModule import SelfTest, VolumeNodes  # noqa: E402
from HyperSORTModule.Errors import SegmentationCancelled  # noqa: E402


def _volume(scene):
    image, affine, _ = SelfTest.syntheticCT()
    return SelfTest.addVolumeNode(scene, image, affine, "CT")


def _labels(node, reference):
    scene = node.GetScene()
    out = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    for index in range(node.GetSegmentation().GetNumberOfSegments()):
        ids.InsertNextValue(node.GetSegmentation().GetNthSegmentID(index))
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(node, ids, out, reference)
    labels = np.array(VolumeNodes.volumeArrayIJK(out))
    scene.RemoveNode(out)
    return labels


def _event_loop_runner(during):
    """A runner like the application's: the computation runs in a worker thread while ``during``
    (what the user does meanwhile) runs in the GUI thread, once, on the first job."""
    calls = []

    def runner(compute):
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(compute)
            if not calls:
                calls.append(None)
                calls[0] = during()
            return future.result()

    runner.calls = calls
    return runner


@pytest.mark.parametrize("full_resolution", [False, True])
def test_accept_during_a_preview_cancels_the_preview_and_succeeds(scene, logic, full_resolution):
    logic.previewFullResolution = full_resolution
    volume = _volume(scene)
    logic.setInputVolume(volume)
    logic.buildLatentMap()
    expected = _labels(logic.acceptSegmentation(logic.mainMode()), volume)
    scene.RemoveNode(scene.GetFirstNodeByClass("vtkMRMLSegmentationNode"))
    logic.segmenter.clear_cache()  # the preview must compute, not return the accepted labels at once
    logic.runner = _event_loop_runner(lambda: logic.acceptSegmentation(logic.mainMode()))
    with pytest.raises(SegmentationCancelled, match="no node was changed"):
        logic.previewSegmentation(logic.mainMode())
    accepted = logic.runner.calls[0]
    np.testing.assert_array_equal(_labels(accepted, volume), expected)
    assert logic.previewCount == 0 and logic.previewLabelmapNode is None  # the cancelled preview wrote nothing
    assert not logic.busy


def test_a_debounced_preview_superseded_by_accept_reports_no_error(scene, logic):
    logic.setInputVolume(_volume(scene))
    plot = logic.buildLatentMap()
    errors = []
    logic.backgroundError.connect(errors.append)
    logic.runner = _event_loop_runner(lambda: logic.acceptSegmentation(logic.mainMode()))
    plot.setProbe(logic.mainMode().z + 0.01)
    logic.scheduler.advance(200)
    assert errors == [] and logic.lastError is None
    assert logic.runner.calls[0].GetAttribute("HyperSORT.Point") == "main mode"


def test_closing_the_scene_during_a_segmentation_writes_nothing(scene, logic):
    logic.setInputVolume(_volume(scene))
    logic.buildLatentMap()
    logic.runner = _event_loop_runner(lambda: (logic.forgetNodes(), scene.Clear(0)))
    with pytest.raises(SegmentationCancelled):
        logic.acceptSegmentation(logic.mainMode())
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert not logic.busy
