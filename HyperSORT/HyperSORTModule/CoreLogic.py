"""The module's logic on MRML nodes, free of Qt: runs in Slicer and in plain Python.

It loads trained runs (cached per run directory and device), turns the selected CT volume
into the arrays the library works on (cached per volume node and modification time),
segments it from any latent point and writes the results into nodes:

* while the probe moves: one persistent *preview* labelmap (coarse grid), updated in place
  and shown as the label layer; probe moves are debounced;
* when the probe stops (or on request): the module's probe segmentation node is updated
  from the preview;
* on Accept: a full-resolution segmentation node on exactly the input grid, one named,
  coloured segment per class (with SNOMED CT terminology for known organs), created or
  updated; a segmentation is updated only while it is the module's and unchanged since it
  wrote it, so segmentations the user made or edited are never written to;
* Compare: two full-resolution segmentations of two latent points, with per-class Dice;
* the review queue of the audit's suspects (:attr:`HyperSORTCoreLogic.review`).

Errors the user can act on surface as :class:`HyperSORTError` with one readable sentence;
nothing is written to any node before a computation has succeeded.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from HyperSORTModule import SegmentationNodes, VolumeNodes
from HyperSORTModule.Debounce import Debouncer, ManualScheduler, Scheduler
from HyperSORTModule.Errors import HyperSORTError, SegmentationCancelled
from HyperSORTModule.Jobs import Job, JobControl
from HyperSORTModule.ReviewLogic import ReviewLogic
from HyperSORTModule.Signal import Signal
from HyperSORTModule.LatentMapPlot import ROLE_ATTRIBUTE, LatentMapPlot, groupSamples  # noqa: F401 (re-exported)
from HyperSORTModule.OutputNodes import (ATTRIBUTE_PREFIX, ROLE_PREVIEW, ROLE_PROBE_SEGMENTATION, ROLE_SEGMENTATION,
                                         OutputNodes, isModuleNode, isUnchangedSinceWritten)


ProgressCallback = Callable[[float], None]
CancelCallback = Callable[[], bool]


@dataclass(frozen=True)
class LatentPoint:
    """A named point of the latent space: a training sample, a style centre, the main mode, the probe.

    ``description`` says, for a style centre, how its UNet segments compared with the main mode's
    (the audit's words in ``analysis/clusters.csv``)."""

    label: str
    z: np.ndarray = field(repr=False)
    kind: str = "point"
    description: str = ""

    def describe(self) -> str:
        return f"{self.label} (z = {', '.join(f'{v:.3f}' for v in np.asarray(self.z).ravel())})"


@dataclass(frozen=True)
class ClassComparison:
    """Agreement of two segmentations for one class."""

    name: str
    dice: float
    volumeA_ml: float
    volumeB_ml: float


_REQUIRED = object()


def _clusterField(cluster, name: str, default=_REQUIRED):
    if default is _REQUIRED:
        return cluster[name] if isinstance(cluster, dict) else getattr(cluster, name)
    return cluster.get(name, default) if isinstance(cluster, dict) else getattr(cluster, name, default)


def clusterName(cluster) -> str:
    """The audit's name of a row of ``analysis/clusters.csv`` (``style 0 (main mode)``, ``isolated 5``;
    ``cluster N`` for a mixture component whose behaviour was not checked)."""
    from HyperSORTLib.rundir import style_name

    return style_name(int(_clusterField(cluster, "cluster")), str(_clusterField(cluster, "kind", "")),
                      bool(_clusterField(cluster, "is_main_mode")))


def diceScores(a: np.ndarray, b: np.ndarray, classNames: Sequence[str], voxelVolumeMl: float) -> list[ClassComparison]:
    """Per-class Dice and volumes of two label maps on the same grid (1.0 when both are empty)."""
    from HyperSORTLib.metrics import confusion_matrix, dice_from_confusion

    table = confusion_matrix(a, b, len(classNames))
    dice = dice_from_confusion(table)
    return [ClassComparison(str(name), float(dice[index]), float(table[index].sum() * voxelVolumeMl),
                            float(table[:, index].sum() * voxelVolumeMl))
            for index, name in enumerate(classNames[1:], start=1)]


class HyperSORTCoreLogic(JobControl):
    """Segmentation from the latent map, on the nodes of ``scene``.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in the application).
        scheduler: timers for debouncing (Qt timers in the application; a
            :class:`ManualScheduler` by default, driven by :meth:`processPendingUpdates`).
        previewDelayMs: a probe move is previewed this long after it starts; moves in between
            join the same update.
        releaseDelayMs: when the probe has not moved for this long, the probe segmentation node
            is updated from the preview (if :attr:`updateSegmentationOnRelease`).
    """

    def __init__(self, scene=None, scheduler: Scheduler | None = None, previewDelayMs: float = 150,
                 releaseDelayMs: float = 600) -> None:
        if scene is None:
            import slicer

            scene = slicer.mrmlScene
        self.scene = scene
        self.scheduler = scheduler if scheduler is not None else ManualScheduler()
        self._runs: dict[tuple[str, str], object] = {}
        self.segmenter = None
        self.inputVolumeNode = None
        self.plot = LatentMapPlot(scene, onProbeMoved=self.onProbeMoved)
        self.previewDebouncer = Debouncer(self._debouncedPreview, previewDelayMs, self.scheduler)
        self.releaseDebouncer = Debouncer(self._debouncedRelease, releaseDelayMs, self.scheduler, restart=True)
        self.previewEnabled = True
        #: Compute the live labelmap on the input grid instead of the coarse preview grid (fast GPUs).
        self.previewFullResolution = False
        self.updateSegmentationOnRelease = True
        self.nodes = OutputNodes(scene)
        #: The review queue of the loaded run's suspects (:mod:`HyperSORTModule.ReviewLogic`).
        self.review = ReviewLogic(self)
        self.previewLabelmapNode = None
        self.probeSegmentationNode = None
        self.previewCount = 0
        #: Runs a computation ``runner(compute) -> result``; None runs it directly. The application
        #: runs it in a worker thread while the event loop keeps the window responsive (the
        #: computation touches no node; nodes are read before and written after it).
        self.runner: Callable[[Callable[[], object]], object] | None = None
        self._job: Job | None = None
        #: How long an Accept or Compare waits for a running preview to stop after cancelling it.
        self.previewStopSeconds = 60.0
        #: Incremented when the scene closes: a computation that started before writes nothing.
        self._sceneGeneration = 0
        #: Name of the point the probe was last moved to by :meth:`pickPoint` (None after a drag).
        self.probeLabel: str | None = None
        self.lastTimings: dict[str, float] = {}
        #: The label map (LabelVolume, exactly the input grid) of the last :meth:`acceptSegmentation`,
        #: for front ends that also write it to disk.
        self.lastAcceptedLabels = None
        self.lastError: str | None = None
        #: Why the run's ``analysis/`` was not used (it describes other weights), for the status line.
        self.lastWarning: str | None = None
        #: Emitted with (labelmap node, latent point) after every preview.
        self.previewUpdated = Signal()
        #: Emitted with a message when a debounced (background) update fails.
        self.backgroundError = Signal()
        #: Emitted with the probe's latent point whenever the probe moves.
        self.probeChanged = Signal()

    # ------------------------------------------------------------------ runs
    def loadRun(self, runDirectory: str | Path, device: str = "auto"):
        """Load a trained run (cached per resolved directory and device) and make it current.

        Reading the weights (and importing torch the first time) goes through :attr:`runner`, so
        the application keeps its window responsive meanwhile."""
        runDirectory = Path(str(runDirectory)).expanduser()
        if not str(runDirectory) or not runDirectory.is_dir():
            raise HyperSORTError(f"Run directory '{runDirectory}' does not exist. Choose the folder written by "
                                 "'hypersort train' (it holds config.json and model.safetensors).")
        key = (str(runDirectory.resolve()), str(device))
        if key not in self._runs:
            def load():
                from HyperSORTLib.inference import InteractiveSegmenter

                return InteractiveSegmenter.load(runDirectory, device=device)

            self._stopRunningPreview()
            with self._userErrors(f"Loading run '{runDirectory}'"):
                self._runs[key] = self._run(load, Job("load"))
        if self.segmenter is not self._runs[key]:
            self.segmenter = self._runs[key]
            self._resetOutputsForNewRun()
        return self.segmenter

    def _resetOutputsForNewRun(self) -> None:
        self.review.session = self.review.current = None
        self.previewDebouncer.cancel()
        self.releaseDebouncer.cancel()
        self.nodes.forgetColors()
        self.previewLabelmapNode = None
        self.probeSegmentationNode = None

    def forgetNodes(self) -> None:
        """Drop references to nodes and observations (the scene is closing); runs stay loaded.
        A running segmentation is cancelled and writes nothing."""
        self.cancelRunningJob()
        self._sceneGeneration += 1
        self._resetOutputsForNewRun()
        self.review.current = None
        self.plot.detach()

    def requireRun(self):
        if self.segmenter is None:
            raise HyperSORTError("No run is loaded: choose a run directory and press Load.")
        return self.segmenter

    @property
    def classNames(self) -> tuple[str, ...]:
        return tuple(self.requireRun().class_names)

    def checkpointHash(self) -> str:
        """First 16 hex digits of the SHA-256 of the loaded run's weights (provenance of outputs)."""
        segmenter = self.requireRun()
        digest = getattr(getattr(segmenter, "run", None), "weights_sha256", "")
        if not digest:
            from HyperSORTLib.rundir import weights_digest

            digest = weights_digest(segmenter.run_dir)
        return digest[:16]

    def setPreviewSpacing(self, spacingMm: float | None) -> None:
        """Preview grid spacing in mm; 0 or None = automatic (twice the training spacing)."""
        self.requireRun().preview_spacing = None if not spacingMm else float(spacingMm)

    def clearCache(self, releaseGPU: bool = True) -> None:
        """Forget preprocessed volumes and decoded UNets of every loaded run (and free GPU memory)."""
        for segmenter in self._runs.values():
            segmenter.release() if releaseGPU else segmenter.clear_cache()

    def unloadRuns(self) -> None:
        """Drop every loaded run (the next Load reads the run directory again)."""
        self.clearCache()
        self._runs.clear()
        self.segmenter = None
        self._resetOutputsForNewRun()

    # ------------------------------------------------------------------ latent points
    def mainMode(self) -> LatentPoint:
        return LatentPoint("main mode", np.asarray(self.requireRun().main_mode(), np.float64), "main")

    def clusterPoints(self) -> list[LatentPoint]:
        """The centres of the run's styles and isolated groups (or, without an audit, of its mixture
        clusters), named and described as the audit does."""
        return [LatentPoint(clusterName(cluster), np.asarray(_clusterField(cluster, "centre"), np.float64), "cluster",
                            str(_clusterField(cluster, "description", "")))
                for cluster in self.requireRun().clusters()]

    def clusterNames(self) -> dict[int, str]:
        """Name of each value of the ``cluster`` column of ``analysis/samples.csv`` (for the legend)."""
        return {int(_clusterField(c, "cluster")): clusterName(c) for c in self.requireRun().clusters()}

    def styleNameOf(self, value, names: Optional[dict[int, str]] = None) -> str:
        """The style name ("style 1", "isolated 4") of a ``cluster`` value of ``samples.csv`` or of the
        review queue; the value itself if it is no number. ``names``: :meth:`clusterNames`, when at hand."""
        try:
            index = int(float(value))
        except (TypeError, ValueError):
            return str(value)
        names = self.clusterNames() if names is None else names
        return names.get(index, f"cluster {index}")

    def samplePoint(self, caseId: str) -> LatentPoint:
        with self._userErrors("Choosing a training sample"):
            return LatentPoint(str(caseId), np.asarray(self.requireRun().latent_of(caseId), np.float64), "sample")

    def probePoint(self) -> LatentPoint:
        """The probe's latent point, named after the sample or centre it was moved to, else by its
        coordinates (the main mode while no latent map is shown)."""
        if self.plot.probeTable is None:
            return LatentPoint(self.mainMode().label, self.mainMode().z, "probe")
        z = self.plot.probe()
        return LatentPoint(self.probeLabel or f"z = ({', '.join(f'{v:.3f}' for v in z)})", z, "probe")

    def latentPoints(self) -> list[LatentPoint]:
        """Points offered for Compare: main mode, style centres, training samples."""
        segmenter = self.requireRun()
        return [self.mainMode(), *self.clusterPoints(), *[self.samplePoint(c) for c in segmenter.case_ids]]

    # ------------------------------------------------------------------ the latent map
    def buildLatentMap(self, colorBy: str = "cluster", dimensions: tuple[int, int] = (0, 1)) -> LatentMapPlot:
        """Create the plot nodes of the loaded run: samples coloured by ``colorBy``, centres, the probe."""
        segmenter = self.requireRun()
        with self._userErrors("Building the latent map"):
            self.lastWarning = getattr(segmenter, "analysis_warning", None)
            if self.lastWarning:
                logging.warning("HyperSORT: %s Showing clusters of the current latent table.", self.lastWarning)
            groups = groupSamples(segmenter.case_ids, segmenter.sample_table(), colorBy, self.clusterNames())
            clusters = self.clusterPoints()
            probe = self.mainMode().z
            if segmenter.latent_dim < 2:
                dimensions = (0, 0)
            self.plot.build(segmenter.case_ids, segmenter.latents, groups, probe=probe,
                            centres=np.array([c.z for c in clusters]) if clusters else None,
                            centreLabels=[c.label for c in clusters], dimensions=dimensions)
        self.previewDebouncer.cancel()
        self.releaseDebouncer.cancel()
        return self.plot

    def setProbe(self, z: Sequence[float]) -> None:
        """Move the probe (schedules a debounced preview like a drag does)."""
        self._checkLatent(z)
        if self.plot.probeTable is None:
            raise HyperSORTError("There is no latent map yet: load a run first.")
        self.plot.setProbe(z)

    def pickPoint(self, point: LatentPoint) -> object | None:
        """Move the probe to ``point`` and preview it at once (a click on a sample or a centre)."""
        self.setProbe(point.z)
        self.probeLabel = point.label
        self.previewDebouncer.flush()
        return self.previewLabelmapNode

    def onProbeMoved(self) -> None:
        """The probe table changed (drag, spin box): schedule a preview and the release update."""
        self.probeLabel = None
        self.probeChanged.emit(self.plot.probe())
        if not self.previewEnabled:
            return
        self.previewDebouncer.trigger()
        if self.updateSegmentationOnRelease:
            self.releaseDebouncer.trigger()

    def processPendingUpdates(self) -> int:
        """Run due debounced updates now (plain Python has no event loop to do it)."""
        if isinstance(self.scheduler, ManualScheduler):
            return self.scheduler.runPending()
        self.previewDebouncer.flush()
        self.releaseDebouncer.flush()
        return 0

    def _debouncedPreview(self) -> None:
        if self.busy:  # a long segmentation is running: preview once it is done
            self.previewDebouncer.trigger()
            return
        try:
            self.previewSegmentation(self.probePoint())
            self.lastError = None
        except SegmentationCancelled as error:  # superseded by an Accept or Compare, or the scene closed
            logging.debug("HyperSORT: %s", error)
        except HyperSORTError as error:
            self._reportBackgroundError(str(error))

    def _debouncedRelease(self) -> None:
        if self.previewDebouncer.pending:
            self.previewDebouncer.flush()
        if self.previewLabelmapNode is None or self.lastError is not None:
            return
        try:
            self.updateProbeSegmentationFromPreview()
        except HyperSORTError as error:
            self._reportBackgroundError(str(error))

    def _reportBackgroundError(self, message: str) -> None:
        self.lastError = message
        logging.warning("HyperSORT: %s", message)
        self.backgroundError.emit(message)

    # ------------------------------------------------------------------ the input volume
    def setInputVolume(self, volumeNode) -> None:
        self.inputVolumeNode = volumeNode

    def _prepareVolume(self, segmenter, volumeNode) -> None:
        if volumeNode is None:
            raise HyperSORTError("No input volume is selected: load a CT and select it as input volume.")
        array = VolumeNodes.volumeArrayIJK(volumeNode)
        if array.dtype == np.float32:
            array = np.array(array)  # the node's memory may be replaced while the copy is cached
        with self._userErrors(f"Input volume '{volumeNode.GetName()}'"):
            segmenter.set_volume(array, VolumeNodes.ijkToRas(volumeNode), key=VolumeNodes.volumeKey(volumeNode))

    def _checkLatent(self, z: Sequence[float]) -> np.ndarray:
        segmenter = self.requireRun()
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        if z.shape != (segmenter.latent_dim,):
            raise HyperSORTError(f"This run's latent space has {segmenter.latent_dim} dimensions; the latent point "
                                 f"given has {z.size} coordinates.")
        if not np.isfinite(z).all():
            raise HyperSORTError(f"The latent point {z.tolist()} has non-finite coordinates.")
        return z

    def segmentLatent(self, point: LatentPoint, preview: bool = False, progress: ProgressCallback | None = None,
                      cancel: CancelCallback | None = None, volumeNode=None, kind: str | None = None):
        """Segment the input volume as ``point`` annotates; returns the library's LabelVolume.

        ``kind`` "preview" (default for ``preview``) marks work that a later request may cancel."""
        segmenter = self.requireRun()
        z = self._checkLatent(point.z)
        volumeNode = volumeNode or self.inputVolumeNode
        start = time.perf_counter()
        generation = self._sceneGeneration
        job = Job(kind or ("preview" if preview else "segmentation"))

        def cancelled() -> bool:
            return job.cancelled or (cancel is not None and bool(cancel()))

        self._stopRunningPreview()
        self._prepareVolume(segmenter, volumeNode)
        with self._userErrors(f"Segmenting '{volumeNode.GetName()}' at {point.label}"):
            result = self._run(lambda: segmenter.segment(z, preview=preview, progress=progress, cancel=cancelled), job)
        if job.cancelled or generation != self._sceneGeneration:
            raise SegmentationCancelled(f"Segmenting at {point.label}: superseded (a newer request or the scene "
                                        "closed); no node was changed.")
        self.lastTimings = dict(getattr(segmenter, "timings", {}) or {})
        self.lastTimings["logic"] = time.perf_counter() - start
        return result

    # ------------------------------------------------------------------ output nodes
    isModuleNode = staticmethod(isModuleNode)

    def _provenance(self, point: LatentPoint, volumeNode) -> dict[str, str]:
        """Attributes written on every output: latent point, run, checkpoint hash (the source volume is a
        node reference, :data:`OutputNodes.SOURCE_VOLUME_REFERENCE`)."""
        return {"Point": point.label, "Latent": ",".join(f"{v:.9g}" for v in np.asarray(point.z).ravel()),
                "Run": str(self.requireRun().run_dir), "Checkpoint": self.checkpointHash()}

    def previewSegmentation(self, point: LatentPoint | None = None):
        """Segment into the persistent preview labelmap (coarse preview grid unless
        :attr:`previewFullResolution`); returns that node."""
        point = point or self.probePoint()
        volumeNode = self.inputVolumeNode
        result = self.segmentLatent(point, preview=not self.previewFullResolution, volumeNode=volumeNode,
                                    kind="preview")
        start = time.perf_counter()
        if not self.nodes.alive(self.previewLabelmapNode):
            self.previewLabelmapNode = self.nodes.labelmapNode("HyperSORT preview", ROLE_PREVIEW, volumeNode)
        node = self.previewLabelmapNode
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        VolumeNodes.updateVolumeFromIJK(node, result.array, result.affine)
        SegmentationNodes.showLabelmap(node, self.nodes.classColorNode(self.classNames))
        self.nodes.writeProvenance(node, self._provenance(point, volumeNode), volumeNode)
        SegmentationNodes.showInSliceViews(self.scene, labelmapNode=node)
        self.lastTimings["mrml"] = time.perf_counter() - start
        self.previewCount += 1
        self.previewUpdated.emit(node, point)
        return node

    def outputSegmentationNode(self, point: LatentPoint, volumeNode, requested=None, role: str = ROLE_SEGMENTATION):
        """The node an accepted segmentation of ``point`` goes to (never one the user made)."""
        return self.nodes.outputSegmentationNode(point.label, volumeNode, requested, role)

    def _segmentationFromLabels(self, labels, point: LatentPoint, volumeNode, requested=None):
        return self.nodes.segmentationFromLabels(labels, self.classNames, point.label, volumeNode,
                                                 self._provenance(point, volumeNode), requested)

    def acceptSegmentation(self, point: LatentPoint | None = None, progress: ProgressCallback | None = None,
                           cancel: CancelCallback | None = None, segmentationNode=None):
        """Full-resolution segmentation of ``point`` (default: the probe) into a segmentation node.

        Returns the node: ``segmentationNode`` if the module created it, otherwise the module's
        node for this point and volume (created when missing). Segments are on exactly the
        input volume's grid.
        """
        point = point or self.probePoint()
        volumeNode = self.inputVolumeNode
        labels = self.segmentLatent(point, preview=False, progress=progress, cancel=cancel, volumeNode=volumeNode)
        start = time.perf_counter()
        self.previewDebouncer.cancel()  # the accepted result replaces the preview on screen
        self.releaseDebouncer.cancel()
        node = self._segmentationFromLabels(labels, point, volumeNode, segmentationNode)
        self.lastAcceptedLabels = labels
        self.nodes.hideLabelLayer(self.previewLabelmapNode)
        self.lastTimings["mrml"] = time.perf_counter() - start
        return node

    def updateProbeSegmentationFromPreview(self):
        """Copy the current preview into the module's probe segmentation node (cheap, coarse grid)."""
        preview = self.previewLabelmapNode
        if not self.nodes.alive(preview):
            raise HyperSORTError("There is no preview yet: move the probe or click a sample first.")
        volumeNode = self.inputVolumeNode
        if volumeNode is None:
            raise HyperSORTError("No input volume is selected.")
        latent = (preview.GetAttribute(ATTRIBUTE_PREFIX + "Latent") or "").split(",")
        point = LatentPoint(preview.GetAttribute(ATTRIBUTE_PREFIX + "Point") or "probe",
                            np.array([float(v) for v in latent if v]), "probe")
        probe = self.probeSegmentationNode
        if not (self.nodes.alive(probe) and isModuleNode(probe, ROLE_PROBE_SEGMENTATION)
                and isUnchangedSinceWritten(probe)):  # an edited probe segmentation is the user's now
            self.probeSegmentationNode = self.nodes.newSegmentationNode("HyperSORT probe", ROLE_PROBE_SEGMENTATION)
            self.probeSegmentationNode.GetDisplayNode().SetVisibility(False)
        self.nodes.writeSegmentation(self.probeSegmentationNode, preview, self.classNames, volumeNode,
                                     self._provenance(point, volumeNode))
        return self.probeSegmentationNode

    def compare(self, pointA: LatentPoint, pointB: LatentPoint, progress: ProgressCallback | None = None,
                cancel: CancelCallback | None = None):
        """Segment two latent points at full resolution into two segmentation nodes.

        A is drawn filled, B as outlines, so differences stand out. Returns
        ``(nodeA, nodeB, [ClassComparison per class])``.
        """
        volumeNode = self.inputVolumeNode

        def part(offset: float):
            return None if progress is None else (lambda f: progress(offset + 0.5 * float(f)))

        labelsA = self.segmentLatent(pointA, progress=part(0.0), cancel=cancel, volumeNode=volumeNode)
        labelsB = self.segmentLatent(pointB, progress=part(0.5), cancel=cancel, volumeNode=volumeNode)
        voxelMl = abs(np.linalg.det(VolumeNodes.ijkToRas(volumeNode)[:3, :3])) / 1000.0
        summary = diceScores(labelsA.array, labelsB.array, self.classNames, voxelMl)
        nodeA = self._segmentationFromLabels(labelsA, pointA, volumeNode)
        nodeB = self._segmentationFromLabels(labelsB, pointB, volumeNode)
        displayA, displayB = nodeA.GetDisplayNode(), nodeB.GetDisplayNode()
        displayA.SetVisibility2DFill(True)
        displayB.SetVisibility2DFill(False)
        displayB.SetVisibility2DOutline(True)
        displayB.SetSliceIntersectionThickness(3)
        self.nodes.hideLabelLayer(self.previewLabelmapNode)
        return nodeA, nodeB, summary

    # ------------------------------------------------------------------ errors
    @contextmanager
    def _userErrors(self, what: str):
        """Turn library exceptions into one-sentence :class:`HyperSORTError` messages."""
        try:
            yield
        except HyperSORTError:
            raise
        except InterruptedError as error:
            raise SegmentationCancelled(f"{what}: cancelled; no node was changed.") from error
        except (ValueError, FileNotFoundError, KeyError) as error:
            raise HyperSORTError(f"{what}: {error}") from error
        except RuntimeError as error:
            if "out of memory" in str(error).lower():
                raise HyperSORTError(f"{what}: the GPU ran out of memory. Choose device 'cpu' or a coarser "
                                     "preview spacing, or press 'Clear cache'.") from error
            raise
