"""Label maps and segmentations in the scene: colour tables, named segments, class colours.

A multi-class label map becomes a segmentation node in one import (all segments share one
labelmap, segment ``i`` is label value ``i``), with one named, coloured segment per class
(background excluded), on exactly the label map's grid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import vtk

#: Colours (RGB 0-1) of common CT structures, close to Slicer's GenericAnatomyColors.
ANATOMY_COLORS = {
    "liver": (0.86, 0.59, 0.40),
    "spleen": (0.62, 0.43, 0.71),
    "kidney": (0.72, 0.44, 0.34),
    "kidney_right": (0.72, 0.44, 0.34),
    "kidney_left": (0.85, 0.54, 0.42),
    "right_kidney": (0.72, 0.44, 0.34),
    "left_kidney": (0.85, 0.54, 0.42),
    "pancreas": (0.98, 0.82, 0.56),
    "stomach": (0.85, 0.70, 0.55),
    "aorta": (0.88, 0.20, 0.20),
    "spine": (0.95, 0.92, 0.78),
    "vertebrae": (0.95, 0.92, 0.78),
    "bone": (0.95, 0.92, 0.78),
    "lung": (0.77, 0.88, 0.98),
    "heart": (0.81, 0.27, 0.27),
    "bladder": (0.87, 0.83, 0.44),
    "gallbladder": (0.55, 0.71, 0.40),
    "body": (0.69, 0.69, 0.69),
    "tumor": (0.56, 0.93, 0.56),
    "tumour": (0.56, 0.93, 0.56),
}

#: SNOMED CT codes (type; category "Anatomical Structure") of the organs the dataset readers name
#: (AMOS, TotalSegmentator and their aliases), keyed by :func:`organKey`.
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
ORGAN_CODES = {
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "kidney": ("64033007", "Kidney"),
    "kidney right": ("9846003", "Right kidney"),
    "kidney left": ("18639004", "Left kidney"),
    "bladder gall": ("28231008", "Gallbladder"),
    "gallbladder": ("28231008", "Gallbladder"),
    "esophagus": ("32849002", "Esophagus"),
    "oesophagus": ("32849002", "Esophagus"),
    "stomach": ("69695003", "Stomach"),
    "aorta": ("15825003", "Aorta"),
    "arota": ("15825003", "Aorta"),  # AMOS's own spelling
    "postcava": ("64131007", "Inferior vena cava"),
    "cava inferior vena": ("64131007", "Inferior vena cava"),
    "ivc": ("64131007", "Inferior vena cava"),
    "pancreas": ("15776009", "Pancreas"),
    "adrenal gland": ("23451007", "Adrenal gland"),
    "adrenal gland right": ("281625000", "Right adrenal gland"),
    "adrenal gland left": ("281624001", "Left adrenal gland"),
    "duodenum": ("38848004", "Duodenum"),
    "bladder": ("89837001", "Urinary bladder"),
    "bladder urinary": ("89837001", "Urinary bladder"),
    "prostate": ("41216001", "Prostate"),
    "uterus": ("35039007", "Uterus"),
    "heart": ("80891009", "Heart"),
    "lung": ("39607008", "Lung"),
}
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def organKey(name: str) -> str:
    """Words of a class name, lower case and sorted: 'kidney_right', 'Right kidney' -> 'kidney right'."""
    words = str(name).lower().replace("_", " ").replace("-", " ").split()
    return " ".join(sorted(words))


def terminologyEntry(name: str) -> str | None:
    """Slicer's serialised terminology entry for a known organ (SNOMED CT), else None."""
    code = ORGAN_CODES.get(organKey(name))
    if code is None:
        return None
    category = "^".join(ANATOMICAL_STRUCTURE)
    return f"{TERMINOLOGY_CONTEXT}~{category}~SCT^{code[0]}^{code[1]}~^^~{ANATOMIC_CONTEXT}~^^~^^"


def setTerminology(segment, name: str) -> None:
    """Give ``segment`` the standard terminology of the organ ``name`` (unknown names keep theirs)."""
    entry = terminologyEntry(name)
    if entry is not None:
        segment.SetTag(segment.GetTerminologyEntryTagName(), entry)


#: Distinct colours for classes without an anatomical default (Tableau 10, then Set 3).
CATEGORICAL = [
    (0.122, 0.467, 0.706), (1.000, 0.498, 0.055), (0.173, 0.627, 0.173), (0.839, 0.153, 0.157),
    (0.580, 0.404, 0.741), (0.549, 0.337, 0.294), (0.890, 0.467, 0.761), (0.498, 0.498, 0.498),
    (0.737, 0.741, 0.133), (0.090, 0.745, 0.812), (0.553, 0.827, 0.780), (1.000, 1.000, 0.702),
    (0.745, 0.729, 0.855), (0.984, 0.502, 0.447), (0.502, 0.694, 0.827), (0.992, 0.706, 0.384),
]


def classColors(classNames: Sequence[str]) -> list[tuple[float, float, float]]:
    """One RGB colour per class (index 0 = background, black): anatomical when the name is known."""
    colors = [(0.0, 0.0, 0.0)]
    spare = iter(CATEGORICAL * (1 + len(classNames) // len(CATEGORICAL)))
    for name in classNames[1:]:
        key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
        colors.append(ANATOMY_COLORS.get(key) or next(spare))
    return colors


def updateColorTable(colorNode, classNames: Sequence[str], colors: Sequence[Sequence[float]]) -> None:
    """Make ``colorNode`` (a vtkMRMLColorTableNode) hold one named entry per class; background transparent."""
    wasModifying = colorNode.StartModify()
    colorNode.SetTypeToUser()
    colorNode.SetNumberOfColors(len(classNames))
    for index, (name, rgb) in enumerate(zip(classNames, colors)):
        alpha = 0.0 if index == 0 else 1.0
        colorNode.SetColor(index, str(name), float(rgb[0]), float(rgb[1]), float(rgb[2]), alpha)
    colorNode.EndModify(wasModifying)


def showLabelmap(labelmapNode, colorNode) -> None:
    """Give a labelmap node a display node using ``colorNode``."""
    if labelmapNode.GetDisplayNode() is None:
        labelmapNode.CreateDefaultDisplayNodes()
    labelmapNode.GetDisplayNode().SetAndObserveColorNodeID(colorNode.GetID())


def showInSliceViews(scene, labelmapNode=None, backgroundNode=None, labelOpacity: float = 0.5) -> None:
    """Show volumes in every slice view of the scene (works without the application GUI)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if backgroundNode is not None:
            composite.SetBackgroundVolumeID(backgroundNode.GetID())
        if labelmapNode is not None:
            composite.SetLabelVolumeID(labelmapNode.GetID())
            composite.SetLabelOpacity(labelOpacity)


def segmentIds(classNames: Sequence[str]) -> list[str]:
    """Segment ids for the foreground classes: the class names, made unique."""
    ids, seen = [], set()
    for index, name in enumerate(classNames[1:], start=1):
        candidate = str(name) or f"class_{index}"
        if candidate in seen:
            candidate = f"{candidate}_{index}"
        seen.add(candidate)
        ids.append(candidate)
    return ids


def updateSegmentationFromLabelmap(segmentationNode, labelmapNode, classNames: Sequence[str],
                                   colors: Sequence[Sequence[float]], referenceVolumeNode=None,
                                   removable: Sequence[str] = ()) -> list[str]:
    """Write the classes of ``labelmapNode`` into ``segmentationNode``; returns the segment ids written.

    Every foreground class gets a segment (empty when the class is absent), named after the
    class, coloured with its colour and given its standard terminology when the class is a
    known organ. Of the other segments only those in ``removable`` (ones written before) are
    removed; any other segment is kept. The segments keep the label map's grid; the reference
    geometry is the source volume's when given.
    """
    import slicer

    if labelmapNode.GetImageData() is None:
        raise ValueError(f"Labelmap '{labelmapNode.GetName()}' has no voxel data.")
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    ids = segmentIds(classNames)
    segmentation = segmentationNode.GetSegmentation()
    wasModifying = segmentationNode.StartModify()
    try:
        if referenceVolumeNode is not None:
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
        for existing in [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]:
            if existing not in ids and existing in removable:
                segmentation.RemoveSegment(existing)
        idArray = vtk.vtkStringArray()
        for segmentId in ids:
            idArray.InsertNextValue(segmentId)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmapNode, segmentationNode, idArray):
            raise RuntimeError(f"Importing labelmap '{labelmapNode.GetName()}' into segmentation "
                               f"'{segmentationNode.GetName()}' failed (see the application log).")
        for segmentId, name, rgb in zip(ids, classNames[1:], colors[1:]):
            segment = segmentation.GetSegment(segmentId)
            segment.SetName(str(name))
            segment.SetColor(float(rgb[0]), float(rgb[1]), float(rgb[2]))
            setTerminology(segment, str(name))
    finally:
        segmentationNode.EndModify(wasModifying)
    return ids


def segmentVoxelCounts(segmentationNode, classNames: Sequence[str]) -> dict[str, int]:
    """Voxels per segment (counted on the segments' own labelmap)."""
    from vtk.util import numpy_support

    counts = {}
    segmentation = segmentationNode.GetSegmentation()
    for segmentId in segmentIds(classNames):
        segment = segmentation.GetSegment(segmentId)
        if segment is None:
            continue
        image = segment.GetRepresentation("Binary labelmap")
        if image is None or image.GetPointData().GetScalars() is None:
            counts[segmentId] = 0
            continue
        values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        counts[segmentId] = int(np.count_nonzero(values == segment.GetLabelValue()))
    return counts
