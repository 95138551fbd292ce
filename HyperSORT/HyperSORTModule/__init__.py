"""The HyperSORT Slicer module's code, one concern per file.

Qt-free (runs in Slicer and in plain Python with slicer-core): ``CoreLogic`` (segmenting from
latent points into nodes), ``Jobs`` (one computation at a time; previews cancelled by later
requests), ``ReviewLogic`` (the review queue of the audit's suspects), ``LatentMapPlot`` (plot
nodes of the latent map), ``OutputNodes`` (ownership and provenance of the nodes the module
writes), ``VolumeNodes`` (volume nodes <-> IJK arrays), ``SegmentationNodes`` (colour tables,
segmentations, terminology), ``Debounce`` (coalescing probe moves), ``Signal`` (plain-Python
signals), ``LogicInterface`` (what the panel needs from its logic), ``Compatibility`` (supported
Slicer releases), ``StandaloneScene`` (a scene outside the application), ``SelfTest`` (synthetic
data and the packaged tiny run).

Application only (need Slicer's Qt): ``ApplicationLogic`` (the logic on ``slicer.mrmlScene``),
``Parameter`` (parameter node), ``Widget`` and ``ReviewPanel`` (GUI wiring), ``QtSupport`` (Qt
timers, progress with Cancel), ``InstallLogic`` (dependencies; its constraint and pip functions
are plain Python), ``ModuleTest`` (the self-test run by ``Slicer --testing``).
"""
