"""The Slicer module's Logic against a real MRML scene (slicer-core): geometry, plot nodes,
debounced probe moves, ownership of segmentations, errors."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from conftest import SHARED_DATA  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "HyperSORT"))

from HyperSORTModule import SegmentationNodes, SelfTest, VolumeNodes  # noqa: E402
from HyperSORTModule.CoreLogic import (ROLE_ATTRIBUTE, HyperSORTCoreLogic, LatentPoint,  # noqa: E402
                                       diceScores)
from HyperSORTModule.Debounce import Debouncer, ManualScheduler  # noqa: E402
from HyperSORTModule.Errors import HyperSORTError, SegmentationCancelled  # noqa: E402
from HyperSORTModule.LatentMapPlot import columnName, groupSamples  # noqa: E402

CT_EXAMPLES = SHARED_DATA / "ct-examples"


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory) -> Path:
    """A 3-D latent run with analysis tables (samples.csv, clusters.csv) as `hypersort analyze` writes them."""
    run = SelfTest.trainTinyRun(tmp_path_factory.mktemp("slicer_run3"), epochs=1, latentDim=3, seed=1)
    from HyperSORTLib.inference import TrainedRun

    trained = TrainedRun.load(run, device="cpu")
    latents, ids = trained.latents, trained.case_ids
    (run / "analysis").mkdir()
    clusters = [0, 0, 0, 1, 1, 2]
    suspicion = [0.1, 0.2, 0.3, 0.5, 0.7, 0.95]
    with open(run / "analysis" / "samples.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", *[f"z{d + 1}" for d in range(3)], "cluster", "suspicion", "rank"])
        order = np.argsort(suspicion)[::-1]
        for row in reversed(range(len(ids))):  # a different row order than the run's
            writer.writerow([ids[row], *latents[row], clusters[row], suspicion[row], int(np.where(order == row)[0][0]) + 1])
    with open(run / "analysis" / "clusters.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cluster", "kind", "size", "weight", "z1", "z2", "z3", "is_main_mode", "description"])
        kinds = ["style", "style", "isolated"]
        descriptions = ["segments like the main mode", "liver about 25% larger than the main mode", "spleen missing"]
        for k in range(3):
            centre = latents[[i for i, c in enumerate(clusters) if c == k]].mean(0)
            writer.writerow([k, kinds[k], clusters.count(k), clusters.count(k) / 6, *centre, k == 0, descriptions[k]])
    from HyperSORTLib import rundir
    from HyperSORTLib.utils.io import atomic_write_json

    # The tables describe these weights (as hypersort analyze records); without it they are stale.
    atomic_write_json(run / rundir.ANALYSIS_DIR / rundir.PROVENANCE_FILE, rundir.analysis_provenance(run))
    return run


def _synthetic_volume(scene, oblique=False, name="CT"):
    image, affine, _ = SelfTest.syntheticCT(oblique=oblique)
    return SelfTest.addVolumeNode(scene, image, affine, name)


def _real_ct(name: str, crop: tuple[slice, ...] | None = None):
    """A shared CT example as (array [I, J, K], affine); ``crop`` takes a block (nibabel adjusts the affine)."""
    path = CT_EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"shared CT example {path} is not available")
    image = nib.load(str(path))
    if crop is not None:
        image = image.slicer[crop]
    return np.asarray(image.dataobj), image.affine


def _oblique(affine: np.ndarray, degrees: float = 25.0) -> np.ndarray:
    """The same scan turned about an oblique axis through its centre (a non-axis-aligned acquisition)."""
    a = np.deg2rad(degrees)
    axis = np.array([1.0, 2.0, 3.0]) / np.linalg.norm([1.0, 2.0, 3.0])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    turned = np.eye(4)
    turned[:3, :3] = rotation @ affine[:3, :3]
    turned[:3, 3] = rotation @ affine[:3, 3]
    return turned


def _matrix(node) -> np.ndarray:
    return VolumeNodes.ijkToRas(node)


def _segment_geometry(segmentation_node, segment_id):
    image = segmentation_node.GetSegmentation().GetSegment(segment_id).GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    extent = image.GetExtent()
    return VolumeNodes.arrayFromMatrix(matrix), tuple(extent[2 * i + 1] - extent[2 * i] + 1 for i in range(3))


def _export_labels(segmentation_node, reference, class_names) -> np.ndarray:
    """Segments -> one labelmap on the reference grid, [I, J, K]."""
    scene = segmentation_node.GetScene()
    out = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    for segment_id in SegmentationNodes.segmentIds(class_names):
        ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, out, reference)
    labels = np.array(VolumeNodes.volumeArrayIJK(out))
    scene.RemoveNode(out)
    return labels


def _user_segmentation(scene, volume):
    """A segmentation the user drew: one segment of known voxels on the volume grid."""
    shape = VolumeNodes.volumeArrayIJK(volume).shape
    drawn = np.zeros(shape, np.uint8)
    drawn[2:6, 3:7, 1:4] = 1
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "drawn")
    VolumeNodes.updateVolumeFromIJK(labelmap, drawn, _matrix(volume))
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "My segmentation")
    node.CreateDefaultDisplayNodes()
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node)
    scene.RemoveNode(labelmap)
    return node, int(drawn.sum())


def _drag_probe(plot, column: str, value: float) -> None:
    """What a MovePoints drag does: VTK writes the coordinate into the probe row and modifies the table."""
    table = plot.probeTable.GetTable()
    table.SetValueByName(0, column, vtk.vtkVariant(float(value)))
    table.Modified()


# ---------------------------------------------------------------------------- volumes <-> arrays
@pytest.mark.parametrize("name,oblique", [
    ("chest-imaging-platform/ct.nii.gz", False),  # LPS-flipped axes
    ("totalsegmentator/A_sm_example_ct_sm/ct.nii.gz", False),  # RAS
    ("chest-imaging-platform/ct.nii.gz", True),  # turned about an oblique axis
])
def test_volume_node_round_trip_keeps_voxels_and_geometry(scene, name, oblique):
    array, affine = _real_ct(name)
    if oblique:
        affine = _oblique(affine)
    node = SelfTest.addVolumeNode(scene, array, affine, "ct")
    np.testing.assert_array_equal(VolumeNodes.volumeArrayIJK(node), array)
    np.testing.assert_allclose(_matrix(node), affine, atol=1e-9)
    # Slicer's own accessor returns KJI: the transposed array
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array.transpose(2, 1, 0))
    assert node.GetImageData().GetDimensions() == array.shape


def test_volume_key_changes_with_voxels_and_geometry(scene):
    node = _synthetic_volume(scene)
    key = VolumeNodes.volumeKey(node)
    assert VolumeNodes.volumeKey(node) == key
    array = slicer.util.arrayFromVolume(node)
    array[0, 0, 0] += 1
    slicer.util.arrayFromVolumeModified(node)
    key2 = VolumeNodes.volumeKey(node)
    assert key2 != key
    node.SetOrigin(1.0, 2.0, 3.0)
    assert VolumeNodes.volumeKey(node) != key2


# ---------------------------------------------------------------------------- segmentation geometry
@pytest.mark.slow
@pytest.mark.parametrize("name,crop,oblique", [
    ("chest-imaging-platform/ct.nii.gz", np.s_[10:50, 12:52, 30:62], False),  # LPS axes
    ("chest-imaging-platform/ct.nii.gz", np.s_[10:50, 12:52, 30:62], True),  # oblique
    ("totalsegmentator/A_sm_example_ct_sm/ct.nii.gz", np.s_[40:80, 30:70, :], False),  # RAS
])
def test_accepted_segmentation_lies_exactly_on_the_input_grid(scene, logic, name, crop, oblique):
    array, affine = _real_ct(name, crop)
    if oblique:
        affine = _oblique(affine)
    volume = SelfTest.addVolumeNode(scene, array, affine, "real CT")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    logic.setInputVolume(volume)
    point = logic.samplePoint(logic.segmenter.case_ids[1])
    logic.segmenter.set_volume(array, affine)  # the library's own answer from the original arrays
    expected = logic.segmenter.segment(point.z, preview=False)

    node = logic.acceptSegmentation(point)
    assert node.GetName() == f"HyperSORT {point.label}"
    assert node.GetAttribute(ROLE_ATTRIBUTE) == "segmentation"
    assert node.GetTransformNodeID() == transform.GetID()
    assert [node.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)] == ["ball_a", "ball_b"]
    colors = SegmentationNodes.classColors(logic.classNames)
    np.testing.assert_allclose(node.GetSegmentation().GetSegment("ball_b").GetColor(), colors[2])
    for segment_id in ("ball_a", "ball_b"):
        matrix, dims = _segment_geometry(node, segment_id)
        np.testing.assert_allclose(matrix, affine, atol=1e-6)
        assert dims == array.shape
    np.testing.assert_array_equal(_export_labels(node, volume, logic.classNames), expected.array)
    reference = node.GetSegmentation().GetConversionParameter("Reference image geometry")
    assert reference.split(";")[-7:-1] == ["0", str(array.shape[0] - 1), "0", str(array.shape[1] - 1),
                                            "0", str(array.shape[2] - 1)]
    assert node.GetAttribute("HyperSORT.Latent") == ",".join(f"{v:.9g}" for v in point.z)
    assert len(node.GetAttribute("HyperSORT.Checkpoint")) == 16


def test_preview_labelmap_is_created_once_and_updated_in_place(scene, logic):
    volume = _synthetic_volume(scene, oblique=True)
    logic.setInputVolume(volume)
    first = logic.previewSegmentation(logic.mainMode())
    image, affine, _ = SelfTest.syntheticCT(oblique=True)
    logic.segmenter.set_volume(image, affine)
    expected = logic.segmenter.segment(logic.mainMode().z, preview=True)
    np.testing.assert_array_equal(VolumeNodes.volumeArrayIJK(first), expected.array)
    np.testing.assert_allclose(_matrix(first), expected.affine, atol=1e-9)
    assert first.GetDisplayNode().GetColorNode().GetColorName(2) == "ball_b"
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        assert scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").GetLabelVolumeID() == first.GetID()

    logic.setPreviewSpacing(3.0)
    second = logic.previewSegmentation(logic.samplePoint("case_004"))
    assert second is first
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 1
    np.testing.assert_allclose(np.linalg.norm(_matrix(second)[:3, :3], axis=0), [3.0, 3.0, 3.0])
    logic.segmenter.set_volume(image, affine)
    expected = logic.segmenter.segment(logic.samplePoint("case_004").z, preview=True)
    np.testing.assert_array_equal(VolumeNodes.volumeArrayIJK(second), expected.array)

    # full resolution while dragging: the same node, now exactly on the input volume's grid
    logic.previewFullResolution = True
    third = logic.previewSegmentation(logic.samplePoint("case_004"))
    assert third is first
    np.testing.assert_allclose(_matrix(third), _matrix(volume), atol=1e-9)
    assert third.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    logic.segmenter.set_volume(image, affine)
    expected = logic.segmenter.segment(logic.samplePoint("case_004").z, preview=False)
    np.testing.assert_array_equal(VolumeNodes.volumeArrayIJK(third), expected.array)


# ---------------------------------------------------------------------------- the latent map
def test_latent_map_nodes_are_built_as_the_plot_view_needs(scene, logic):
    plot = logic.buildLatentMap(colorBy="cluster")
    ids = logic.segmenter.case_ids
    assert len(plot.sampleTables) == 1  # no analysis: one colour
    table = plot.sampleTables[0].GetTable()
    names = [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())]
    assert names == ["case_id", "z1", "z2"]
    assert [table.GetValueByName(r, "case_id").ToString() for r in range(table.GetNumberOfRows())] == list(ids)
    np.testing.assert_array_equal(
        [[table.GetValueByName(r, c).ToDouble() for c in ("z1", "z2")] for r in range(len(ids))],
        logic.segmenter.latents.astype(np.float64))
    chart_series = [plot.chartNode.GetNthPlotSeriesNodeID(i) for i in range(plot.chartNode.GetNumberOfPlotSeriesNodes())]
    assert chart_series == [s.GetID() for s in plot.allSeries()]
    assert chart_series[-1] == plot.probeSeries.GetID()  # drawn on top
    for series in plot.allSeries():
        assert series.GetPlotType() == slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter
        assert (series.GetXColumnName(), series.GetYColumnName(), series.GetLabelColumnName()) == ("z1", "z2", "case_id")
        assert scene.GetNodeByID(series.GetTableNodeID()) is not None
    assert plot.probeSeries.GetTableNodeID() == plot.probeTable.GetID()
    assert plot.probeTable.GetTable().GetNumberOfRows() == 1
    np.testing.assert_allclose(plot.probe(), logic.mainMode().z)
    assert plot.viewNode.GetPlotChartNodeID() == plot.chartNode.GetID()
    assert plot.viewNode.GetInteractionMode() == slicer.vtkMRMLPlotViewNode.InteractionModeMovePoints
    assert plot.viewNode.GetEnablePointMoveAlongX() and plot.viewNode.GetEnablePointMoveAlongY()
    assert plot.chartNode.GetEnablePointMoveAlongX() and plot.chartNode.GetEnablePointMoveAlongY()
    plot.setDragEnabled(False)
    assert plot.viewNode.GetInteractionMode() == slicer.vtkMRMLPlotViewNode.InteractionModeSelectPoints

    # rebuilding replaces the nodes instead of piling them up
    count = scene.GetNumberOfNodes()
    logic.buildLatentMap(colorBy="suspicion")
    assert scene.GetNumberOfNodes() == count


def test_latent_map_colours_by_analysis_and_shows_chosen_dimensions(scene, analysed_run):
    logic = HyperSORTCoreLogic(scene)
    segmenter = logic.loadRun(analysed_run, device="cpu")
    plot = logic.buildLatentMap(colorBy="cluster", dimensions=(0, 2))
    labels = [[t.GetTable().GetValueByName(r, "case_id").ToString() for r in range(t.GetNumberOfRows())]
              for t in plot.sampleTables]
    assert labels == [list(segmenter.case_ids[:3]), list(segmenter.case_ids[3:5]), [segmenter.case_ids[5]]]
    assert len({tuple(s.GetColor()) for s in plot.sampleSeries}) == 3
    assert plot.centreTable.GetTable().GetNumberOfRows() == 3
    # named as the audit names them, the behaviour in words with each centre
    assert [g.name for g in groupSamples(segmenter.case_ids, segmenter.sample_table(), "cluster",
                                         logic.clusterNames())] == ["style 0 (main mode)", "style 1", "isolated 2"]
    # the review queue's cluster values (as read from samples.csv) by the same names
    assert [logic.styleNameOf(v) for v in ("1", "2.0", 0, "9", "n/a")] == [
        "style 1", "isolated 2", "style 0 (main mode)", "cluster 9", "n/a"]
    assert [s.GetName() for s in plot.sampleSeries] == ["style 0 (main mode) (3)", "style 1 (2)", "isolated 2 (1)"]
    assert [(c.label, c.description) for c in logic.clusterPoints()] == [
        ("style 0 (main mode)", "segments like the main mode"),
        ("style 1", "liver about 25% larger than the main mode"), ("isolated 2", "spleen missing")]
    assert [(s.GetXColumnName(), s.GetYColumnName()) for s in plot.allSeries()] == [("z1", "z3")] * 5
    assert plot.chartNode.GetYAxisTitle() == "z3"

    # dragging in the (z1, z3) view keeps z2 of the probe
    before = plot.probe()
    _drag_probe(plot, "z3", 0.75)
    np.testing.assert_allclose(plot.probe(), [before[0], before[1], 0.75])

    groups = groupSamples(segmenter.case_ids, segmenter.sample_table(), "suspicion")
    assert groups[-1].name == "most suspicious 10%"
    assert [segmenter.case_ids[r] for r in groups[-1].rows] == [segmenter.case_ids[5]]
    assert sorted(r for g in groups for r in g.rows) == list(range(6))
    with pytest.raises(ValueError, match="colorBy"):
        groupSamples(segmenter.case_ids, None, "density")
    assert logic.lastWarning is None


def test_latent_map_of_a_stale_analysis_uses_current_clusters_and_says_so(scene, analysed_run, tmp_path):
    """Tables made from other weights (training continued after analyze) are not paired with these."""
    import shutil

    from HyperSORTLib import rundir
    from HyperSORTLib.utils.io import atomic_write_json

    run = shutil.copytree(analysed_run, tmp_path / "run")
    provenance = {**rundir.analysis_provenance(run), "weights_sha256": "0" * 64, "epoch": 0}
    atomic_write_json(run / rundir.ANALYSIS_DIR / rundir.PROVENANCE_FILE, provenance)
    logic = HyperSORTCoreLogic(scene)
    segmenter = logic.loadRun(run, device="cpu")
    with pytest.warns(UserWarning, match="epoch 0"):
        plot = logic.buildLatentMap(colorBy="cluster")
    assert logic.lastWarning and "epoch 0" in logic.lastWarning and "hypersort analyze" in logic.lastWarning
    assert segmenter.sample_table() is None
    fitted = segmenter.clusters()
    assert plot.centreTable.GetTable().GetNumberOfRows() == len(fitted)


def test_clicked_sample_maps_to_its_case_and_is_segmented(scene, logic):
    logic.setInputVolume(_synthetic_volume(scene))
    plot = logic.buildLatentMap()
    series = plot.sampleSeries[0]
    case = plot.caseIdAt(series.GetID(), 3)
    assert case == logic.segmenter.case_ids[3]
    assert plot.caseIdAt(plot.probeSeries.GetID(), 0) is None
    assert plot.centreAt(plot.centreSeries.GetID(), 0) == 0
    node = logic.pickPoint(logic.samplePoint(case))
    assert logic.previewCount == 1
    np.testing.assert_allclose(plot.probe(), logic.segmenter.latent_of(case))
    assert node.GetAttribute("HyperSORT.Point") == case  # the probe is named after the sample it went to
    logic.processPendingUpdates()
    assert logic.previewCount == 1  # the click's preview ran at once; nothing left to coalesce
    accepted = logic.acceptSegmentation()
    assert accepted.GetName() == f"HyperSORT {case}"
    _drag_probe(plot, "z1", 0.0123)  # once dragged, the probe is named by its coordinates
    assert logic.probePoint().label.startswith("z = (0.012, ")


# ---------------------------------------------------------------------------- debouncing
def test_probe_edits_within_the_window_give_exactly_one_preview(scene, logic):
    logic.setInputVolume(_synthetic_volume(scene))
    plot = logic.buildLatentMap()
    seen = []
    logic.previewUpdated.connect(lambda node, point: seen.append(point.z.copy()))
    clock = logic.scheduler
    for step, value in enumerate(np.linspace(-0.02, 0.03, 6)):
        _drag_probe(plot, "z1", value)
        clock.advance(20)  # 6 edits over 120 ms
    assert logic.previewCount == 0
    clock.advance(29)
    assert logic.previewCount == 0
    clock.advance(1)  # 150 ms after the first edit
    assert logic.previewCount == 1
    np.testing.assert_allclose(seen[0][0], 0.03)  # the latest position, not the first
    clock.advance(100)
    assert logic.previewCount == 1

    _drag_probe(plot, "z2", 0.01)  # a new burst, a new preview
    clock.advance(150)
    assert logic.previewCount == 2
    np.testing.assert_allclose(seen[1], [0.03, 0.01])


def test_probe_release_updates_the_probe_segmentation_once(scene, logic):
    volume = _synthetic_volume(scene)
    logic.setInputVolume(volume)
    plot = logic.buildLatentMap()
    clock = logic.scheduler
    for value in (0.01, 0.02, 0.03):
        _drag_probe(plot, "z1", value)
        clock.advance(200)  # a slow drag: one preview per move, no release yet
    assert logic.previewCount == 3 and logic.probeSegmentationNode is None
    clock.advance(600)
    node = logic.probeSegmentationNode
    assert node is not None and node.GetAttribute(ROLE_ATTRIBUTE) == "probe-segmentation"
    counts = SegmentationNodes.segmentVoxelCounts(node, logic.classNames)
    preview = VolumeNodes.volumeArrayIJK(logic.previewLabelmapNode)
    assert counts == {"ball_a": int((preview == 1).sum()), "ball_b": int((preview == 2).sum())}
    mtime = node.GetMTime()
    clock.advance(5000)
    assert node.GetMTime() == mtime and logic.previewCount == 3


def test_spin_box_path_and_disabled_preview(scene, logic):
    logic.setInputVolume(_synthetic_volume(scene))
    plot = logic.buildLatentMap()
    logic.setProbe([0.1, -0.1])
    np.testing.assert_allclose(plot.probe(), [0.1, -0.1])
    logic.processPendingUpdates()
    assert logic.previewCount == 1
    logic.previewEnabled = False
    logic.setProbe([0.2, -0.2])
    assert logic.processPendingUpdates() == 0 and logic.previewCount == 1


def test_dragged_training_samples_are_put_back(scene, logic):
    plot = logic.buildLatentMap()
    table = plot.sampleTables[0].GetTable()
    original = table.GetValueByName(2, "z2").ToDouble()
    table.SetValueByName(2, "z2", vtk.vtkVariant(original + 5.0))
    table.Modified()
    assert table.GetValueByName(2, "z2").ToDouble() == original
    assert plot.restoreCount == 1
    assert logic.scheduler.pendingCount() == 0  # moving a sample is not a probe move


def test_debouncer_semantics():
    clock = ManualScheduler()
    calls = []
    coalescing = Debouncer(lambda: calls.append(("c", clock.now)), 150, clock)
    trailing = Debouncer(lambda: calls.append(("t", clock.now)), 100, clock, restart=True)
    for _ in range(4):
        coalescing.trigger()
        trailing.trigger()
        clock.advance(60)
    clock.advance(200)
    assert calls == [("c", 150.0), ("t", 280.0), ("c", 330.0)]

    # a trigger arriving while the callback runs schedules one more run instead of re-entering
    calls.clear()

    def slow():
        calls.append(clock.now)
        if len(calls) == 1:
            reentrant.trigger()
            reentrant.trigger()

    reentrant = Debouncer(slow, 50, clock)
    reentrant.trigger()
    clock.advance(500)
    assert len(calls) == 2
    with pytest.raises(ValueError):
        Debouncer(slow, -1, clock)


# ---------------------------------------------------------------------------- ownership and errors
def test_user_segmentation_is_never_overwritten(scene, logic):
    volume = _synthetic_volume(scene)
    logic.setInputVolume(volume)
    user_node, voxels = _user_segmentation(scene, volume)
    user_mtime = user_node.GetMTime()
    node = logic.acceptSegmentation(logic.mainMode(), segmentationNode=user_node)
    assert node is not user_node and node.GetAttribute(ROLE_ATTRIBUTE) == "segmentation"
    assert user_node.GetMTime() == user_mtime
    assert user_node.GetSegmentation().GetNumberOfSegments() == 1
    exported = _export_labels_any(user_node, volume)
    assert int(exported.sum()) == voxels

    # accepting the same point again updates the module's node instead of adding one
    again = logic.acceptSegmentation(logic.mainMode(), segmentationNode=node)
    assert again is node
    again = logic.acceptSegmentation(logic.mainMode())
    assert again is node
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2


def _export_labels_any(segmentation_node, reference) -> np.ndarray:
    scene = segmentation_node.GetScene()
    out = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportAllSegmentsToLabelmapNode(segmentation_node, out)
    labels = np.array(VolumeNodes.volumeArrayIJK(out))
    scene.RemoveNode(out)
    return labels


def _snapshot(scene):
    return {scene.GetNthNode(i).GetID(): scene.GetNthNode(i).GetMTime() for i in range(scene.GetNumberOfNodes())}


def test_errors_are_readable_and_leave_nodes_intact(scene, logic, tmp_path):
    volume = _synthetic_volume(scene)
    logic.setInputVolume(volume)
    logic.buildLatentMap()
    user_node, voxels = _user_segmentation(scene, volume)
    logic.previewSegmentation(logic.mainMode())
    accepted = logic.acceptSegmentation(logic.mainMode())
    flat = SelfTest.addVolumeNode(scene, np.zeros((20, 20, 1), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]), "flat")
    before = _snapshot(scene)
    counts = SegmentationNodes.segmentVoxelCounts(accepted, logic.classNames)

    with pytest.raises(HyperSORTError, match="2 dimensions; the latent point given has 3"):
        logic.acceptSegmentation(LatentPoint("bad", np.zeros(3)), segmentationNode=accepted)
    with pytest.raises(HyperSORTError, match="non-finite"):
        logic.previewSegmentation(LatentPoint("bad", np.array([np.nan, 0.0])))
    logic.setInputVolume(flat)
    with pytest.raises(HyperSORTError, match="'flat'.*single slice"):
        logic.acceptSegmentation(logic.mainMode(), segmentationNode=accepted)
    with pytest.raises(HyperSORTError, match="'flat'"):
        logic.previewSegmentation(logic.mainMode())
    logic.setInputVolume(None)
    with pytest.raises(HyperSORTError, match="No input volume"):
        logic.previewSegmentation(logic.mainMode())
    with pytest.raises(HyperSORTError, match="does not exist"):
        logic.loadRun(tmp_path / "missing")
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(HyperSORTError, match="config.json"):
        logic.loadRun(tmp_path / "not_a_run")
    with pytest.raises(HyperSORTError, match="not a training case"):
        logic.samplePoint("case_999")

    assert _snapshot(scene) == before
    assert SegmentationNodes.segmentVoxelCounts(accepted, logic.classNames) == counts

    # a failed debounced preview is reported, not raised into the event loop
    messages = []
    logic.backgroundError.connect(messages.append)
    logic.setProbe([0.0, 0.0])
    logic.processPendingUpdates()
    assert messages and "No input volume" in messages[0]
    after = _snapshot(scene)
    changed = {key for key in after if after[key] != before.get(key)}
    assert changed == {logic.plot.probeTable.GetID(), logic.plot.chartNode.GetID()}  # only the probe moved
    assert int(_export_labels_any(user_node, volume).sum()) == voxels


def test_cancel_writes_nothing(scene, logic):
    logic.setInputVolume(_synthetic_volume(scene))
    count = scene.GetNumberOfNodes()
    fractions = []

    def cancel_after_first_window():
        return len(fractions) > 0

    with pytest.raises(SegmentationCancelled, match="cancelled"):
        logic.acceptSegmentation(logic.mainMode(), progress=fractions.append, cancel=cancel_after_first_window)
    assert fractions and scene.GetNumberOfNodes() == count


def test_compare_two_latent_points(scene, logic):
    volume = _synthetic_volume(scene)
    logic.setInputVolume(volume)
    a, b = logic.mainMode(), logic.samplePoint("case_005")
    progress = []
    node_a, node_b, summary = logic.compare(a, b, progress=progress.append)
    assert progress[-1] == pytest.approx(1.0) and max(progress[: len(progress) // 2]) <= 0.5
    assert (node_a.GetName(), node_b.GetName()) == ("HyperSORT main mode", "HyperSORT case_005")
    assert node_a.GetDisplayNode().GetVisibility2DFill() and not node_b.GetDisplayNode().GetVisibility2DFill()
    labels_a = _export_labels(node_a, volume, logic.classNames)
    labels_b = _export_labels(node_b, volume, logic.classNames)
    voxel_ml = 8.0 / 1000.0
    expected = diceScores(labels_a, labels_b, logic.classNames, voxel_ml)
    for row, oracle in zip(summary, expected):
        assert row.name == oracle.name and row.dice == pytest.approx(oracle.dice)
        assert (row.volumeA_ml, row.volumeB_ml) == pytest.approx((oracle.volumeA_ml, oracle.volumeB_ml))
    assert [row.name for row in summary] == ["ball_a", "ball_b"]
    assert summary[1].volumeA_ml == pytest.approx(float((labels_a == 2).sum()) * voxel_ml)


def test_dice_scores_oracle():
    a = np.zeros((4, 4, 4), np.uint8)
    b = np.zeros_like(a)
    a[:2] = 1
    b[1:3] = 1
    rows = diceScores(a, b, ["bg", "x", "y"], 0.5)
    assert rows[0].dice == pytest.approx(2 * 16 / 64) and rows[0].volumeA_ml == 16.0
    assert rows[1].dice == 1.0  # absent from both


def test_run_cache_is_keyed_by_directory_and_device(scene, tiny_run):
    logic = HyperSORTCoreLogic(scene)
    first = logic.loadRun(tiny_run, device="cpu")
    assert logic.loadRun(str(tiny_run) + "/", device="cpu") is first
    other = logic.loadRun(tiny_run, device="auto")
    assert other is not first and logic.segmenter is other
    logic.unloadRuns()
    with pytest.raises(HyperSORTError, match="No run is loaded"):
        logic.mainMode()


def test_closing_the_scene_forgets_nodes_but_keeps_the_run(scene, logic):
    logic.setInputVolume(_synthetic_volume(scene))
    plot = logic.buildLatentMap()
    logic.previewSegmentation(logic.mainMode())
    probe_table = plot.probeTable
    logic.forgetNodes()
    assert logic.previewLabelmapNode is None and plot.probeTable is None
    table = probe_table.GetTable()
    table.SetValueByName(0, "z1", vtk.vtkVariant(0.5))
    table.Modified()
    assert logic.scheduler.pendingCount() == 0  # no longer observed
    np.testing.assert_allclose(logic.probePoint().z, logic.mainMode().z)
    with pytest.raises(HyperSORTError, match="no latent map"):
        logic.setProbe([0.0, 0.0])
    assert logic.segmenter is not None


def test_segmentation_runs_in_a_worker_thread_and_is_never_reentered(scene, logic):
    """The application runs segmentations beside the event loop; events arriving meanwhile are deferred."""
    from concurrent.futures import ThreadPoolExecutor

    volume = _synthetic_volume(scene)
    logic.setInputVolume(volume)
    plot = logic.buildLatentMap()
    direct = _export_labels(logic.acceptSegmentation(logic.mainMode()), volume, logic.classNames)
    logic.segmenter.clear_cache()  # the comparison must compute in the worker, not return cached labels
    events = []

    def event_loop_runner(compute):
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(compute)
            # what the GUI may do while the worker computes: drag the probe, press Accept again
            _drag_probe(plot, "z1", 0.02)
            logic.scheduler.advance(200)
            with pytest.raises(HyperSORTError, match="still running"):
                logic.acceptSegmentation(logic.mainMode())
            events.append(logic.previewCount)
            return future.result()

    logic.runner = event_loop_runner
    node = logic.compare(logic.mainMode(), logic.samplePoint("case_001"))[0]
    np.testing.assert_array_equal(_export_labels(node, volume, logic.classNames), direct)
    assert events == [0, 0]  # no preview ran during the two segmentations of the comparison...
    logic.runner = None
    logic.scheduler.advance(200)
    assert logic.previewCount == 1  # ...it ran right after, at the dragged position
    assert logic.previewLabelmapNode.GetAttribute("HyperSORT.Latent").startswith("0.02,")


def test_one_dimensional_latent_space_is_drawn_on_a_line(scene, tmp_path):
    run = SelfTest.trainTinyRun(tmp_path, epochs=1, latentDim=1)
    logic = HyperSORTCoreLogic(scene)
    logic.loadRun(run, device="cpu")
    plot = logic.buildLatentMap(dimensions=(0, 1))
    assert {(s.GetXColumnName(), s.GetYColumnName()) for s in plot.allSeries()} == {("z1", "baseline")}
    assert plot.chartNode.GetEnablePointMoveAlongX() and not plot.chartNode.GetEnablePointMoveAlongY()
    _drag_probe(plot, "z1", 0.3)
    np.testing.assert_allclose(plot.probe(), [0.3])
