"""One explorer session on a real MRML scene, free of trame: the page's handlers call only this.

It drives the module's Qt-free Logic (:class:`HyperSORTModule.CoreLogic.HyperSORTCoreLogic`) and its
review queue (:class:`HyperSORTModule.ReviewLogic.ReviewLogic`): a scan opened from the server's disk
(only below the folders the server may read, :class:`HyperSORTExplore.Access.AccessPolicy`), the latent
map's points for the page's chart, clicks on samples and style centres, debounced probe moves, window /
level presets, Accept (a NIfTI file and a Slicer ``.seg.nrrd`` written next to the scan, never over an
existing file) and the review of the audit's suspects with verdicts saved to the run's ``review.csv``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from HyperSORTExplore.Access import AccessPolicy, reserveOutputs
from HyperSORTModule import SegmentationNodes, VolumeNodes
from HyperSORTModule.CoreLogic import HyperSORTCoreLogic, LatentPoint
from HyperSORTModule.Errors import HyperSORTError
from HyperSORTModule.LatentMapPlot import groupSamples, latentRange

#: Window / level presets of the slice views (HU): name -> (window, level); "auto" uses the scan's range.
WINDOW_PRESETS = {"soft tissue": (400.0, 40.0), "lung": (1500.0, -600.0), "bone": (1800.0, 400.0),
                  "abdomen": (350.0, 50.0)}

#: What an accepted segmentation is written as, next to the scan.
OUTPUT_SUFFIXES = (".nii.gz", ".seg.nrrd")


def _hexColor(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{int(round(255 * float(c))):02x}" for c in rgb[:3])


@dataclass(frozen=True)
class AcceptedFiles:
    """What Accept wrote: the label map (NIfTI, exactly the scan's grid) and the Slicer segmentation."""

    nifti: Path
    segmentation: Path
    point: str
    seconds: float


class ExploreLogic:
    """The explorer's session: one run, one scan on screen, the latent map, accept, review.

    Args:
        scene: a real MRML scene whose slice views show the results (trame-slicer's ``SlicerApp.scene``).
        policy: the folders the server may read below.
        scheduler: timers for the debounced probe preview (:class:`HyperSORTExplore.Scheduling.AsyncioScheduler`).
        device: where the UNets run.
        previewDelayMs: a probe move is previewed this long after the first move of a burst (as in the module).
    """

    def __init__(self, scene, policy: AccessPolicy, scheduler=None, device: str = "auto",
                 previewDelayMs: float = 150) -> None:
        self.scene = scene
        self.policy = policy
        self.device = device
        self.core = HyperSORTCoreLogic(scene, scheduler, previewDelayMs=previewDelayMs)
        self.core.updateSegmentationOnRelease = False  # the page shows the preview; Accept makes the full one
        self.scanPath: Path | None = None
        self.scanImage = None
        self.scanNode = None
        self.dataset: Path | None = None
        self.windowPreset = "auto"
        self.accepted: list[AcceptedFiles] = []

    # ------------------------------------------------------------------ run and scan
    def loadRun(self, run: str | os.PathLike):
        self.core.loadRun(run, device=self.device)
        self.core.buildLatentMap(colorBy="cluster")
        return self.core.segmenter

    @property
    def segmenter(self):
        return self.core.requireRun()

    def openScan(self, path: str | os.PathLike):
        """Read a NIfTI scan below the allowed folders into a volume node and show it in the slice views."""
        from HyperSORTLib.inference import load_scan

        resolved = self.policy.checkRead(path, "scan")
        if not resolved.name.endswith((".nii", ".nii.gz")):
            raise HyperSORTError(f"{resolved.name}: the explorer opens NIfTI scans (.nii or .nii.gz).")
        with self.core._userErrors(f"Opening scan {resolved}"):
            array, affine, image = load_scan(resolved)
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", resolved.name)
        VolumeNodes.updateVolumeFromIJK(node, array, affine)
        node.CreateDefaultDisplayNodes()
        previous = self.scanNode
        self.scanPath, self.scanImage, self.scanNode = resolved, image, node
        self.core.setInputVolume(node)
        self.core.review.current = None
        self.showScan()
        self.setWindowPreset(self.windowPreset)
        if previous is not None and self.scene.IsNodePresent(previous):
            self.scene.RemoveNode(previous)
        return node

    def requireScan(self):
        if self.scanNode is None:
            raise HyperSORTError("No scan is open: enter the path of a CT scan (NIfTI) and press Open.")
        return self.scanNode

    def showScan(self) -> None:
        """The scan in the background of every slice view, the preview (if any) as the label layer."""
        node = self.requireScan()
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = self.scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
            composite.SetBackgroundVolumeID(node.GetID())
            preview = self.core.previewLabelmapNode
            composite.SetLabelVolumeID(preview.GetID() if preview is not None else None)
            composite.SetLabelOpacity(0.5)
        self._setSegmentationsVisible(reviewVisible=False)
        self._centreSlices(node)

    def _centreSlices(self, volumeNode) -> None:
        ijkToRas = VolumeNodes.ijkToRas(volumeNode)
        dims = np.array(volumeNode.GetImageData().GetDimensions(), np.float64)
        centre = (ijkToRas @ np.append((dims - 1) / 2.0, 1.0))[:3]
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            self.scene.GetNthNodeByClass(index, "vtkMRMLSliceNode").JumpSliceByCentering(*[float(v) for v in centre])

    def setWindowPreset(self, name: str) -> None:
        """Window / level of the scan: a :data:`WINDOW_PRESETS` name or "auto"."""
        if name != "auto" and name not in WINDOW_PRESETS:
            raise HyperSORTError(f"Unknown window preset {name!r}; choose auto, {', '.join(WINDOW_PRESETS)}.")
        self.windowPreset = name
        for node in (self.scanNode, getattr(self.core.review.current, "volumeNode", None)):
            display = node.GetDisplayNode() if node is not None else None
            if display is None:
                continue
            if name == "auto":
                display.AutoWindowLevelOn()
            else:
                display.AutoWindowLevelOff()
                display.SetWindowLevel(*WINDOW_PRESETS[name])

    # ------------------------------------------------------------------ the latent map
    def mapData(self, colorBy: str = "cluster") -> dict:
        """The chart's points: samples (case id, latent, colour group, style), style centres, axis ranges.

        Styles are named and described as the audit does (``style 0 (main mode)``, ``isolated 5``, and how
        each one's UNet segments compared with the main mode's); a run without an audit shows the clusters
        of a mixture fitted to its latent table (``cluster N``, no description)."""
        segmenter = self.segmenter
        latents = np.asarray(segmenter.latents, np.float64)
        names = self.core.clusterNames()
        groups = groupSamples(segmenter.case_ids, segmenter.sample_table(), colorBy, names)
        table = segmenter.sample_table() or {}
        suspicion = dict(zip(table.get("case_id", []), table.get("suspicion", [])))
        styleOf = {case: self.core.styleNameOf(value, names) for case, value in zip(table.get("case_id", []),
                                                                                 table.get("cluster", []))}
        centres = [{"index": index, "label": point.label, "description": point.description,
                    "z": [float(v) for v in point.z]} for index, point in enumerate(self.core.clusterPoints())]
        described = {c["label"]: c["description"] for c in centres}
        samples = []
        for group in groups:
            for row in group.rows:
                caseId = segmenter.case_ids[row]
                style = styleOf.get(caseId, "")
                samples.append({"id": caseId, "z": [float(v) for v in latents[row]], "group": group.name,
                                "color": _hexColor(group.color), "suspicion": suspicion.get(caseId, ""),
                                "style": style, "description": described.get(style, "")})
        allPoints = np.vstack([latents] + [np.array([c["z"] for c in centres])] if centres else [latents])
        low, high = latentRange(allPoints)
        return {"dim": int(segmenter.latent_dim), "samples": samples, "centres": centres,
                "low": [float(v) for v in low], "high": [float(v) for v in high],
                "groups": [{"name": g.name, "color": _hexColor(g.color), "description": described.get(g.name, "")}
                           for g in groups],
                "audited": any(getattr(c, "kind", "") for c in segmenter.clusters()),
                "probe": [float(v) for v in self.core.plot.probe()]}

    def pickSample(self, caseId: str):
        """Segment the scan (preview grid) with the UNet of training sample ``caseId``."""
        self.requireScan()
        return self._pick(self.core.samplePoint(caseId))

    def pickCentre(self, index: int):
        """Segment the scan with the UNet of style centre ``index`` (a row of ``analysis/clusters.csv``)."""
        self.requireScan()
        centres = self.core.clusterPoints()
        if not 0 <= int(index) < len(centres):
            raise HyperSORTError(f"There is no style centre {index}; this run has {len(centres)}.")
        return self._pick(centres[int(index)])

    def _pick(self, point: LatentPoint):
        self.showScan()
        return self.core.pickPoint(point)

    def moveProbe(self, z: Sequence[float]) -> bool:
        """A probe move from the page (drag or slider): schedules one debounced preview per burst.
        Returns False when ``z`` is where the probe already is (the page echoing the server)."""
        z = np.asarray([float(v) for v in z], np.float64)
        current = self.core.plot.probe()
        if current.shape == z.shape and np.allclose(current, z, rtol=0, atol=1e-9):
            return False
        self.requireScan()
        if self.core.review.current is not None:
            self.showScan()
        self.core.setProbe(z)
        return True

    def previewSummary(self) -> dict:
        """What the preview on screen shows: its point, latent, voxels per class, count, timings."""
        node = self.core.previewLabelmapNode
        if node is None:
            return {"count": self.core.previewCount, "point": "", "latent": [], "voxels": {}, "ms": 0.0}
        labels = VolumeNodes.volumeArrayIJK(node)
        counts = np.bincount(np.asarray(labels, np.int64).ravel(), minlength=len(self.core.classNames))
        latent = [float(v) for v in (node.GetAttribute("HyperSORT.Latent") or "").split(",") if v]
        return {"count": self.core.previewCount, "point": node.GetAttribute("HyperSORT.Point") or "",
                "latent": latent, "shape": list(labels.shape),
                "voxels": {name: int(counts[i]) for i, name in enumerate(self.core.classNames) if i > 0},
                "ms": round(1000.0 * sum(v for k, v in self.core.lastTimings.items() if k in ("logic", "mrml")), 1)}

    # ------------------------------------------------------------------ accept
    def acceptPoint(self) -> LatentPoint:
        """The point Accept segments: the probe's (named after the sample or centre it was moved to)."""
        self.requireScan()
        return self.core.probePoint()

    def computeFullResolution(self, point: LatentPoint, progress=None) -> None:
        """The full-resolution pass of ``point``, touching no node, so that it may run in a worker thread
        while the page's event loop keeps serving (``progress`` gets the finished fraction of the UNet's
        sliding windows); :meth:`accept` then finds the labels in the segmenter's cache. Meanwhile the
        Logic counts as busy: a preview waits for it, another segmentation is refused."""
        self.core.segmentLatent(point, preview=False, progress=progress, volumeNode=self.requireScan())

    def accept(self, progress=None, point: LatentPoint | None = None) -> AcceptedFiles:
        """Full-resolution segmentation of ``point`` (default: the probe's), as a segmentation node and as two
        files beside the scan: ``<scan>_hypersort_<point>.nii.gz`` (the scan's grid and header) and
        ``.seg.nrrd``; a numbered name is chosen when one exists, so nothing is overwritten."""
        import nibabel as nib

        from HyperSORTLib.utils.io import atomic_path, atomic_save_nifti

        self.requireScan()
        start = time.perf_counter()
        point = point or self.core.probePoint()
        node = self.core.acceptSegmentation(point, progress=progress)
        labels = self.core.lastAcceptedLabels
        niftiPath, segPath = reserveOutputs(self.scanPath, point.label, OUTPUT_SUFFIXES)
        try:
            header = self.scanImage.header.copy()
            header.set_data_dtype(np.uint8 if labels.array.max() < 256 else np.int16)
            image = nib.Nifti1Image(labels.array.astype(header.get_data_dtype()), self.scanImage.affine, header=header)
            image.header.set_slope_inter(1, 0)
            atomic_save_nifti(image, niftiPath)
            self._writeSegmentation(node, segPath)
        except BaseException:
            for path in (niftiPath, segPath):
                if path.is_file() and path.stat().st_size == 0:
                    path.unlink()
            raise
        files = AcceptedFiles(niftiPath, segPath, point.label, time.perf_counter() - start)
        self.accepted.append(files)
        return files

    def _writeSegmentation(self, segmentationNode, path: Path) -> None:
        """Slicer's own writer (vtkMRMLSegmentationStorageNode), to a temporary name, then renamed."""
        storage = self.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        try:
            temporary = path.with_name(f".{path.name[:-len('.seg.nrrd')]}.{os.getpid()}.tmp.seg.nrrd")
            storage.SetFileName(str(temporary))
            if not storage.WriteData(segmentationNode) or not temporary.is_file():
                temporary.unlink(missing_ok=True)
                raise HyperSORTError(f"Slicer's segmentation writer could not write {path}.")
            os.replace(temporary, path)
        finally:
            self.scene.RemoveNode(storage)

    # ------------------------------------------------------------------ review
    def startReview(self, reviewer: str):
        """Open (or resume) the review of the run's suspects; verdicts go to ``RUN/analysis/review.csv``."""
        return self.core.review.start(reviewer, dataset=str(self.dataset) if self.dataset else None)

    def reviewRows(self) -> list[dict]:
        if self.core.review.session is None:
            return []
        names = self.core.clusterNames()
        return [{"rank": r.rank, "id": r.caseId, "suspicion": round(float(r.suspicion), 3),
                 "style": self.core.styleNameOf(r.cluster, names), "verdict": r.verdict} for r in self.core.review.rows()]

    def openReviewCase(self, caseId: str, progress=None):
        """Show a training case with its own label (filled) and the main mode's segmentation (outlined)."""
        shown = self.core.review.loadCase(caseId, progress=progress)
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = self.scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
            composite.SetBackgroundVolumeID(shown.volumeNode.GetID())
            composite.SetLabelVolumeID(None)
        self._setSegmentationsVisible(reviewVisible=True)
        self.setWindowPreset(self.windowPreset)
        return shown

    def recordVerdict(self, verdict: str, note: str = "") -> str | None:
        return self.core.review.record(verdict, note)

    def _setSegmentationsVisible(self, reviewVisible: bool) -> None:
        """Review segmentations only while a review case is shown; accepted ones only over the scan."""
        current = self.core.review.current
        reviewNodes = {id(current.labelNode), id(current.modeNode)} if current is not None else set()
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
            node = self.scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
            display = node.GetDisplayNode()
            if display is None:
                continue
            isReview = id(node) in reviewNodes
            display.SetVisibility(bool(isReview == reviewVisible and (isReview or self._isAcceptedOnScan(node))))

    def _isAcceptedOnScan(self, node) -> bool:
        from HyperSORTModule.OutputNodes import ROLE_SEGMENTATION, SOURCE_VOLUME_REFERENCE, isModuleNode

        return isModuleNode(node, ROLE_SEGMENTATION) and node.GetNodeReference(SOURCE_VOLUME_REFERENCE) is self.scanNode
