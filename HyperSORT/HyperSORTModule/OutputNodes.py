"""The nodes the module writes: ownership, provenance, class colours, segmentations from label arrays.

Every node the module creates carries the ``HyperSORT.Role`` attribute; only such nodes are
ever written to, so a segmentation the user made (or edited in another module and saved
under another name) cannot be overwritten.
"""

from __future__ import annotations

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


def isModuleNode(node, role: str | None = None) -> bool:
    """Whether the module created ``node`` (and, if given, for ``role``)."""
    value = node.GetAttribute(ROLE_ATTRIBUTE) if node is not None else None
    return value is not None and (role is None or value == role)


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
    def writeProvenance(node, provenance: dict[str, str]) -> None:
        for key, value in provenance.items():
            node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))

    def findSegmentation(self, role: str, pointLabel: str, volumeNode):
        """The module's segmentation of ``pointLabel`` on ``volumeNode``, if there is one."""
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
            node = self.scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
            if (isModuleNode(node, role) and node.GetAttribute(ATTRIBUTE_PREFIX + "Point") == pointLabel
                    and node.GetAttribute(ATTRIBUTE_PREFIX + "Volume") == volumeNode.GetID()):
                return node
        return None

    def outputSegmentationNode(self, pointLabel: str, volumeNode, requested=None, role: str = ROLE_SEGMENTATION):
        """Where a segmentation of ``pointLabel`` goes.

        ``requested`` is used only if the module created it; a segmentation the user made is
        never written to (the module's node for the point is used, created when missing).
        """
        if requested is not None and isModuleNode(requested, role) and self.alive(requested):
            return requested
        if requested is not None and not isModuleNode(requested):
            logging.info("HyperSORT: '%s' was not created by HyperSORT; writing to a new segmentation instead.",
                         requested.GetName())
        existing = self.findSegmentation(role, pointLabel, volumeNode)
        if existing is not None:
            return existing
        node = self.newNode("vtkMRMLSegmentationNode", f"HyperSORT {pointLabel}", role)
        node.CreateDefaultDisplayNodes()
        return node

    def writeSegmentation(self, segmentationNode, labelmapNode, classNames: Sequence[str], volumeNode,
                          provenance: dict[str, str]) -> None:
        """Fill a module segmentation from a labelmap: one named, coloured segment per class."""
        segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        SegmentationNodes.updateSegmentationFromLabelmap(segmentationNode, labelmapNode, classNames,
                                                         SegmentationNodes.classColors(classNames),
                                                         referenceVolumeNode=volumeNode)
        self.writeProvenance(segmentationNode, provenance)

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
