"""The module's parameter node: user choices that persist in the scene (Slicer application only).

Widgets in ``Resources/UI/HyperSORT.ui`` bind to these fields through their
``SlicerParameterName`` property.
"""

from __future__ import annotations

import pathlib
from typing import Annotated

from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper


@parameterNodeWrapper
class HyperSORTParameterNode:
    """
    runDirectory - folder of a trained run (config.json, model.safetensors, latents.csv).
    device - "auto" (GPU when available), "cpu" or "cuda".
    previewSpacing - spacing (mm) of the preview grid while dragging; 0 = automatic (2x training spacing).
    inputVolume - the CT to segment.
    colorBy - colouring of the training samples on the map.
    xDimension, yDimension - latent dimensions shown on the map (0-based).
    dragProbe - drag the probe (MovePoints) instead of selecting samples with a click.
    livePreview - update the preview labelmap while the probe moves.
    previewFullResolution - compute the live labelmap at the input's full resolution (fast GPUs).
    updateOnRelease - update the probe segmentation when the probe stops moving.
    outputSegmentation - segmentation written by Accept (only if HyperSORT created it).
    previewLabelmap - the preview labelmap the module updates in place.
    latent - the probe's latent coordinates.
    latentRun - the run directory ``latent`` belongs to (the probe is restored only for that run).
    """

    runDirectory: pathlib.Path
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    previewSpacing: Annotated[float, WithinRange(0.0, 20.0)] = 0.0
    inputVolume: vtkMRMLScalarVolumeNode
    colorBy: Annotated[str, Choice(["cluster", "suspicion", "none"])] = "cluster"
    xDimension: Annotated[int, WithinRange(0, 63)] = 0
    yDimension: Annotated[int, WithinRange(0, 63)] = 1
    dragProbe: bool = True
    livePreview: bool = True
    previewFullResolution: bool = False
    updateOnRelease: bool = True
    outputSegmentation: vtkMRMLSegmentationNode
    previewLabelmap: vtkMRMLLabelMapVolumeNode
    latent: list[float]
    latentRun: str = ""
