"""The HyperSORT Slicer module's code, one concern per file.

Qt-free (runs in Slicer and in plain Python with slicer-core): ``CoreLogic`` (segmenting from
latent points into nodes), ``LatentMapPlot`` (plot nodes of the latent map), ``OutputNodes``
(ownership and provenance of the nodes the module writes), ``VolumeNodes`` (volume nodes <->
IJK arrays), ``SegmentationNodes`` (colour tables, segmentations), ``Debounce`` (coalescing
probe moves), ``StandaloneScene`` (a scene outside the application), ``SelfTest`` (synthetic
data and a tiny run for the module's self-test).

Application only (need Slicer's Qt): ``Parameter`` (parameter node), ``Widget`` (GUI wiring),
``QtSupport`` (Qt timers, progress with Cancel), ``InstallLogic`` (dependencies).
"""
