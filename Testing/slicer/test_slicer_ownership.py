"""Accept never overwrites a segmentation the user edited, nor removes segments it did not write;
outputs name their source volume by node reference and carry SNOMED CT terminology (real MRML scene)."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from vtk.util import numpy_support  # noqa: E402

from HyperSORTModule import SegmentationNodes, SelfTest, VolumeNodes  # noqa: E402
from HyperSORTModule.OutputNodes import (SOURCE_VOLUME_REFERENCE, isUnchangedSinceWritten,  # noqa: E402
                                         segmentationDigest)


def _volume(scene):
    image, affine, _ = SelfTest.syntheticCT()
    return SelfTest.addVolumeNode(scene, image, affine, "CT")


def _paint(node, segment_id: str, voxels: int = 5) -> None:
    """What a Segment Editor stroke does to the stored voxels: set some to the segment's label value."""
    segment = node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation("Binary labelmap")
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    scalars[np.flatnonzero(scalars == 0)[:voxels]] = segment.GetLabelValue()
    image.Modified()
    segment.Modified()


def _terminology(segment) -> str:
    value = vtk.mutable("")
    segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value)


def _segment_names(node) -> list[str]:
    segmentation = node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


@pytest.fixture
def accepted(scene, logic):
    volume = _volume(scene)
    logic.setInputVolume(volume)
    return volume, logic.acceptSegmentation(logic.mainMode())


def test_an_unchanged_output_is_reused_and_its_source_volume_is_a_node_reference(scene, logic, accepted):
    volume, node = accepted
    assert isUnchangedSinceWritten(node)
    assert node.GetNodeReference(SOURCE_VOLUME_REFERENCE) is volume
    assert node.GetAttribute("HyperSORT.Volume") is None
    assert logic.acceptSegmentation(logic.mainMode(), segmentationNode=node) is node
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1


def test_an_edited_output_is_not_overwritten(scene, logic, accepted):
    volume, node = accepted
    _paint(node, "ball_a")
    assert not isUnchangedSinceWritten(node)
    edited = segmentationDigest(node)
    again = logic.acceptSegmentation(logic.mainMode(), segmentationNode=node)
    assert again is not node and again.GetName() == "HyperSORT main mode_1"
    assert segmentationDigest(node) == edited
    assert logic.acceptSegmentation(logic.mainMode()) is again  # the new, unchanged one is reused from now on


def test_segments_the_user_added_are_kept(scene, logic, accepted):
    volume, node = accepted
    node.GetSegmentation().AddEmptySegment("my lesion", "my lesion")
    again = logic.acceptSegmentation(logic.mainMode(), segmentationNode=node)
    assert again is not node
    assert _segment_names(node) == ["ball_a", "ball_b", "my lesion"]
    assert _segment_names(again) == ["ball_a", "ball_b"]


def test_a_renamed_output_is_the_users(scene, logic, accepted):
    volume, node = accepted
    node.SetName("Reader 1 liver")
    assert logic.acceptSegmentation(logic.mainMode(), segmentationNode=node) is not node
    assert node.GetName() == "Reader 1 liver"


def test_accepting_another_point_with_the_selector_on_an_output_keeps_it(scene, logic, accepted):
    volume, node = accepted
    before = segmentationDigest(node)
    sample = logic.samplePoint(logic.segmenter.case_ids[3])
    other = logic.acceptSegmentation(sample, segmentationNode=node)
    assert other is not node and other.GetName() == f"HyperSORT {sample.label}"
    assert other.GetAttribute("HyperSORT.Point") == sample.label
    assert node.GetName() == "HyperSORT main mode" and segmentationDigest(node) == before


def test_module_segmentation_of_another_volume_is_not_reused(scene, logic, accepted):
    volume, node = accepted
    second = _volume(scene)
    logic.setInputVolume(second)
    other = logic.acceptSegmentation(logic.mainMode(), segmentationNode=node)
    assert other is not node and other.GetNodeReference(SOURCE_VOLUME_REFERENCE) is second


def test_an_edited_probe_segmentation_is_left_alone(scene, logic):
    logic.setInputVolume(_volume(scene))
    logic.buildLatentMap()
    logic.previewSegmentation(logic.mainMode())
    probe = logic.updateProbeSegmentationFromPreview()
    assert logic.updateProbeSegmentationFromPreview() is probe
    _paint(probe, "ball_b")
    edited = segmentationDigest(probe)
    fresh = logic.updateProbeSegmentationFromPreview()
    assert fresh is not probe and segmentationDigest(probe) == edited


@pytest.mark.parametrize("name,code,meaning", [
    ("liver", "10200004", "Liver"), ("right kidney", "9846003", "Right kidney"),
    ("kidney_left", "18639004", "Left kidney"), ("arota", "15825003", "Aorta"),
    ("postcava", "64131007", "Inferior vena cava"), ("gall bladder", "28231008", "Gallbladder"),
    ("adrenal_gland_right", "281625000", "Right adrenal gland")])
def test_known_organs_get_snomed_terminology(name, code, meaning):
    entry = SegmentationNodes.terminologyEntry(name)
    fields = entry.split("~")
    assert fields[0] == "Segmentation category and type - 3D Slicer General Anatomy list"
    assert fields[1] == "SCT^123037004^Anatomical Structure" and fields[2] == f"SCT^{code}^{meaning}"
    assert SegmentationNodes.terminologyEntry("ball_a") is None


def test_segments_of_organ_classes_carry_their_terminology(scene):
    volume = _volume(scene)
    labels = np.zeros(VolumeNodes.volumeArrayIJK(volume).shape, np.uint8)
    labels[2:5, 2:5, 2:5], labels[10:12, 10:12, 10:12] = 1, 2
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    VolumeNodes.updateVolumeFromIJK(labelmap, labels, VolumeNodes.ijkToRas(volume))
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
    names = ("background", "liver", "tumour blob")
    SegmentationNodes.updateSegmentationFromLabelmap(node, labelmap, names, SegmentationNodes.classColors(names))
    liver = node.GetSegmentation().GetSegment("liver")
    assert "SCT^10200004^Liver" in _terminology(liver)
    blob = node.GetSegmentation().GetSegment("tumour blob")
    assert "10200004" not in _terminology(blob)
