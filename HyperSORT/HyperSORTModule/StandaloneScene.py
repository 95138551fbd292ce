"""An MRML scene outside the Slicer application (slicer-core): what the application sets up at start.

The application registers the segmentation representation converters and the default colour
tables, and its layout creates slice views. Scripts and tests that drive the logic on a bare
``vtkMRMLScene`` get the same environment from :func:`newScene`.
"""

from __future__ import annotations


def registerSegmentationConverters() -> None:
    """Register the binary labelmap <-> closed surface converters once per process."""
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for className in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        if className not in present:
            factory.RegisterConverterRule(getattr(slicer, className)())


def newScene(sliceViews=("Red", "Yellow", "Green")):
    """A scene with default colour tables and one slice composite node per named slice view."""
    import slicer

    registerSegmentationConverters()
    scene = slicer.vtkMRMLScene()
    colorLogic = slicer.vtkMRMLColorLogic()
    colorLogic.SetMRMLScene(scene)
    scene._hypersortColorLogic = colorLogic  # keeps the logic alive as long as the scene
    for name in sliceViews:
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        scene.AddNode(composite)
    return scene
