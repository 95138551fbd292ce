"""The nodes the module writes: ownership, provenance, class colours, segmentations from label arrays.

Every node the module creates carries the ``HyperSORT.Role`` attribute, and every segmentation
it writes carries the digest of what it wrote (``HyperSORT.ContentDigest``: node name, segment
ids and names, labelmap voxels). A segmentation is written again only while it is the module's
and unchanged since then; one the user made, edited (painted, added or removed a segment,
renamed) or that is another point's result is never written to: a new node is created instead.
The source volume is a node reference (``HyperSORT.SourceVolume``), which survives scene
save/load and import.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Sequence

from HyperSORTModule import SegmentationNodes, VolumeNodes
from HyperSORTModule.LatentMapPlot import ROLE_ATTRIBUTE

ATTRIBUTE_PREFIX = "HyperSORT."
#: Roles of the nodes the module creates (value of the ``HyperSORT.Role`` attribute).
ROLE_PREVIEW = "preview"
ROLE_SEGMENTATION = "segmentation"
ROLE_PROBE_SEGMENTATION = "probe-segmentation"
ROLE_COLORS = "colors"
ROLE_WORK = "work"
#: Node reference from an output to the CT it segments.
SOURCE_VOLUME_REFERENCE = "HyperSORT.SourceVolume"
DIGEST_ATTRIBUTE = ATTRIBUTE_PREFIX + "ContentDigest"


def isModuleNode(node, role: str | None = None) -> bool:
    """Whether the module created ``node`` (and, if given, for ``role``)."""
    value = node.GetAttribute(ROLE_ATTRIBUTE) if node is not None else None
    return value is not None and (role is None or value == role)


def segmentationDigest(segmentationNode) -> str:
    """SHA-256 of a segmentation's name, segment ids, names, label values and labelmap voxels."""
    from vtk.util import numpy_support

    digest = hashlib.sha256(str(segmentationNode.GetName()).encode())
    segmentation = segmentationNode.GetSegmentation()
    hashedImages: dict[str, str] = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segmentId)
        digest.update(f"|{segmentId}|{segment.GetName()}|{segment.GetLabelValue()}|".encode())
        image = segment.GetRepresentation("Binary labelmap")
        if image is None or image.GetPointData().GetScalars() is None:
            digest.update(b"empty")
            continue
        key = image.GetAddressAsString("vtkObject")
        if key not in hashedImages:  # segments sharing one labelmap hash it once
            voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
            hashedImages[key] = hashlib.sha256(voxels.tobytes()).hexdigest() + str(image.GetExtent())
        digest.update(hashedImages[key].encode())
    return digest.hexdigest()


def isUnchangedSinceWritten(segmentationNode) -> bool:
    """Whether the module wrote ``segmentationNode`` and nobody changed it since."""
    written = segmentationNode.GetAttribute(DIGEST_ATTRIBUTE) if segmentationNode is not None else None
    return bool(written) and written == segmentationDigest(segmentationNode)


def writtenSegmentIds(segmentationNode) -> list[str]:
    return [i for i in (segmentationNode.GetAttribute(ATTRIBUTE_PREFIX + "Segments") or "").split("|") if i]


class OutputNodes:
    """Creates, finds and fills the module's output nodes in ``scene``."""

    def __init__(self, scene) -> None:
        self.scene = scene
        self.colorNode = None

    def newNode(self, className: str, name: str, role: str):
        node = self.scene.AddNewNodeByClass(className, self.scene.GenerateUniqueName(name))
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        return node

    def alive(self, node) -> bool:
        return node is not None and self.scene.IsNodePresent(node)

    def classColorNode(self, classNames: Sequence[str]):
        """The colour table of the classes (one per run: :meth:`forgetColors` when the run changes)."""
        if not self.alive(self.colorNode):
            self.colorNode = self.newNode("vtkMRMLColorTableNode", "HyperSORT classes", ROLE_COLORS)
            self.colorNode.SetHideFromEditors(False)
            SegmentationNodes.updateColorTable(self.colorNode, classNames, SegmentationNodes.classColors(classNames))
        return self.colorNode

    def forgetColors(self) -> None:
        self.colorNode = None

    def labelmapNode(self, name: str, role: str, volumeNode):
        """A new labelmap under the same transform as ``volumeNode``."""
        node = self.newNode("vtkMRMLLabelMapVolumeNode", name, role)
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        return node

    @staticmethod
    def writeProvenance(node, provenance: dict[str, str], volumeNode=None) -> None:
        for key, value in provenance.items():
            node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))
        if volumeNode is not None:
            node.SetNodeReferenceID(SOURCE_VOLUME_REFERENCE, volumeNode.GetID())

    @staticmethod
    def sourceVolume(node):
        """The CT an output segments (its node reference), or None."""
        return node.GetNodeReference(SOURCE_VOLUME_REFERENCE) if node is not None else None

    def reusable(self, node, role: str, pointLabel: str, volumeNode) -> bool:
        """Whether ``node`` may be written with ``pointLabel``'s segmentation of ``volumeNode``: the
        module's node of that role, point and volume, unchanged since the module wrote it."""
        return (self.alive(node) and isModuleNode(node, role)
                and node.GetAttribute(ATTRIBUTE_PREFIX + "Point") == pointLabel
                and self.sourceVolume(node) is volumeNode and isUnchangedSinceWritten(node))

    def findSegmentation(self, role: str, pointLabel: str, volumeNode):
        """The module's unchanged segmentation of ``pointLabel`` on ``volumeNode``, if there is one."""
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
            node = self.scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
            if self.reusable(node, role, pointLabel, volumeNode):
                return node
        return None

    def outputSegmentationNode(self, pointLabel: str, volumeNode, requested=None, role: str = ROLE_SEGMENTATION):
        """Where a segmentation of ``pointLabel`` goes.

        ``requested`` (the panel's selection) is used only if :meth:`reusable`; otherwise the
        module's unchanged node of the point is, or a new node. A segmentation the user made or
        edited, or another point's result, is never written to.
        """
        if requested is not None and self.reusable(requested, role, pointLabel, volumeNode):
            return requested
        if requested is not None:
            logging.info("HyperSORT: '%s' is not HyperSORT's unchanged segmentation of %s; writing to another "
                         "segmentation instead.", requested.GetName(), pointLabel)
        existing = self.findSegmentation(role, pointLabel, volumeNode)
        if existing is not None:
            return existing
        return self.newSegmentationNode(f"HyperSORT {pointLabel}", role)

    def newSegmentationNode(self, name: str, role: str):
        node = self.newNode("vtkMRMLSegmentationNode", name, role)
        node.CreateDefaultDisplayNodes()
        return node

    def writeSegmentation(self, segmentationNode, labelmapNode, classNames: Sequence[str], volumeNode,
                          provenance: dict[str, str]) -> None:
        """Fill a module segmentation from a labelmap: one named, coloured segment per class."""
        segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        written = SegmentationNodes.updateSegmentationFromLabelmap(
            segmentationNode, labelmapNode, classNames, SegmentationNodes.classColors(classNames),
            referenceVolumeNode=volumeNode, removable=writtenSegmentIds(segmentationNode))
        self.writeProvenance(segmentationNode, provenance, volumeNode)
        segmentationNode.SetAttribute(ATTRIBUTE_PREFIX + "Segments", "|".join(written))
        segmentationNode.SetAttribute(DIGEST_ATTRIBUTE, segmentationDigest(segmentationNode))

    def segmentationFromLabels(self, labels, classNames: Sequence[str], pointLabel: str, volumeNode,
                               provenance: dict[str, str], requested=None, role: str = ROLE_SEGMENTATION):
        """Write a label array with its affine (the library's LabelVolume) into the point's segmentation."""
        work = self.labelmapNode("HyperSORT labels", ROLE_WORK, volumeNode)
        work.SetHideFromEditors(True)
        try:
            VolumeNodes.updateVolumeFromIJK(work, labels.array, labels.affine)
            target = self.outputSegmentationNode(pointLabel, volumeNode, requested, role)
            self.writeSegmentation(target, work, classNames, volumeNode, provenance)
        finally:
            self.scene.RemoveNode(work)
        return target

    def hideLabelLayer(self, labelmapNode) -> None:
        """Remove ``labelmapNode`` from the label layer of every slice view."""
        if not self.alive(labelmapNode):
            return
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = self.scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
            if composite.GetLabelVolumeID() == labelmapNode.GetID():
                composite.SetLabelVolumeID(None)
