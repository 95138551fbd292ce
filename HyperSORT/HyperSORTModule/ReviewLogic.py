"""The review queue in the module, free of Qt: the audit's suspects, one case at a time, verdicts.

The queue, the verdicts and ``RUN/analysis/review.csv`` are the library's
(:class:`HyperSORTLib.analysis.review.ReviewSession`, shared with other front ends); this logic
puts a case into the scene: its CT, its own label (filled) and the main mode's segmentation of
it (outlined), and the RAS point at the centre of their largest disagreement, where the slice
views go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from HyperSORTModule import VolumeNodes
from HyperSORTModule.Errors import HyperSORTError
from HyperSORTModule.OutputNodes import isModuleNode, isUnchangedSinceWritten

ROLE_REVIEW_VOLUME = "review-volume"
ROLE_REVIEW_LABEL = "review-label"
ROLE_REVIEW_MODE = "review-mode"


@dataclass(frozen=True)
class ReviewRow:
    """One line of the review table."""

    rank: int
    caseId: str
    suspicion: float
    cluster: str
    verdict: str  # "" while not reviewed


@dataclass
class ReviewCase:
    """The case on screen: its nodes and where the label and the main mode disagree most."""

    caseId: str
    volumeNode: object
    labelNode: object
    modeNode: object
    focusRas: np.ndarray
    disagreementVoxels: int


def largestDisagreement(labels: np.ndarray, other: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, int]:
    """RAS centre and size of the largest connected region where two label maps [I, J, K] differ
    (the volume centre and 0 when they agree everywhere)."""
    from scipy import ndimage

    differ = np.asarray(labels) != np.asarray(other)
    regions, count = ndimage.label(differ)
    if count == 0:
        centre = (np.array(labels.shape) - 1) / 2.0
        size = 0
    else:
        sizes = np.bincount(regions.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1
        centre = np.array(ndimage.center_of_mass(differ, regions, largest))
        size = int(sizes[largest - 1])
    return (np.asarray(affine) @ np.append(centre, 1.0))[:3], size


class ReviewLogic:
    """The review of the loaded run's suspects, on the core logic's scene.

    Args:
        core: the module's :class:`HyperSORTModule.CoreLogic.HyperSORTCoreLogic` (run, scene, nodes).
    """

    def __init__(self, core) -> None:
        self.core = core
        self.session = None
        self.current: Optional[ReviewCase] = None
        self._caseList = None

    # ------------------------------------------------------------------ the queue
    def start(self, reviewer: str, dataset: Optional[str] = None, reviewFile: Optional[str] = None):
        """Open (or resume) the review of the loaded run; ``dataset`` is the training data folder
        when it moved since training (default: the run's recorded data source)."""
        from HyperSORTLib.analysis.review import ReviewError, ReviewSession

        run = self.core.requireRun().run_dir
        if not str(reviewer).strip():
            raise HyperSORTError("Enter your name before reviewing: it is saved with every verdict.")
        try:
            self.session = ReviewSession(run, str(reviewer).strip(), path=reviewFile)
        except ReviewError as error:
            raise HyperSORTError(str(error)) from error
        self._caseList = None
        self._dataset = dataset
        return self.session

    def requireSession(self):
        if self.session is None:
            raise HyperSORTError("No review is open: enter your name and press Start review.")
        return self.session

    def rows(self, cluster: Optional[str] = None) -> list[ReviewRow]:
        """The ranked suspects (or one cluster's members), with the verdicts given so far."""
        session = self.requireSession()
        suspects = session.suspects if cluster is None else session.members(cluster)
        return [ReviewRow(s.rank, s.case_id, s.suspicion, s.cluster,
                          session.verdict(s.case_id).verdict if session.verdict(s.case_id) else "")
                for s in suspects]

    def record(self, verdict: str, note: str = "") -> Optional[str]:
        """Save a verdict on the current case (written at once); returns the next unreviewed case."""
        from HyperSORTLib.analysis.review import ReviewError

        session = self.requireSession()
        if self.current is None:
            raise HyperSORTError("Select a case in the review table first.")
        try:
            session.record(self.current.caseId, verdict, note)
        except ReviewError as error:
            raise HyperSORTError(str(error)) from error
        return session.next_case(after=self.current.caseId)

    # ------------------------------------------------------------------ one case on screen
    def caseList(self):
        if self._caseList is None:
            from HyperSORTLib.data.readers import case_list_from_source
            from HyperSORTLib.rundir import read_run_config

            run = self.core.requireRun().run_dir
            _, _, doc = read_run_config(run)
            source = dict(doc.get("data_source") or {})
            if self._dataset:
                source["path"] = str(self._dataset)
            if "path" not in source:
                raise HyperSORTError(f"The run {run} does not record where its training data is: choose the "
                                     "dataset folder for the review.")
            with self.core._userErrors("Reading the training cases"):
                self._caseList = case_list_from_source(source)
        return self._caseList

    def loadCase(self, caseId: str, progress=None, cancel=None) -> ReviewCase:
        """Show a training case: CT, its label (filled), the main mode's segmentation (outlined)."""
        from HyperSORTLib.data.labels import load_label
        from HyperSORTLib.inference.interactive import LabelVolume
        from HyperSORTLib.utils.nifti import open_nifti

        caseList = self.caseList()
        case = next((c for c in caseList.cases if c.case_id == caseId), None)
        if case is None:
            raise HyperSORTError(f"Case '{caseId}' is not in the dataset {caseList.root}.")
        with self.core._userErrors(f"Reading case '{caseId}'"):
            image = open_nifti(case.image, "image")
            labels, labelImage = load_label(case, caseList)
        self._removeCaseNodes()
        nodes = self.core.nodes
        volume = nodes.newNode("vtkMRMLScalarVolumeNode", f"HyperSORT review {caseId} CT", ROLE_REVIEW_VOLUME)
        VolumeNodes.updateVolumeFromIJK(volume, np.asarray(image.dataobj, dtype=np.float32), image.affine)
        volume.CreateDefaultDisplayNodes()
        mode = self.core.mainMode()
        modeLabels = self.core.segmentLatent(mode, progress=progress, cancel=cancel, volumeNode=volume)
        classNames = self.core.classNames
        provenance = {**self.core._provenance(mode, volume), "Case": caseId}
        labelNode = nodes.segmentationFromLabels(LabelVolume(labels, labelImage.affine), classNames,
                                                 f"{caseId} label", volume, provenance, role=ROLE_REVIEW_LABEL)
        modeNode = nodes.segmentationFromLabels(modeLabels, classNames, f"{caseId} main mode", volume, provenance,
                                                role=ROLE_REVIEW_MODE)
        labelNode.GetDisplayNode().SetVisibility2DFill(True)
        modeNode.GetDisplayNode().SetVisibility2DFill(False)
        modeNode.GetDisplayNode().SetVisibility2DOutline(True)
        if labels.shape == modeLabels.array.shape and np.allclose(labelImage.affine, modeLabels.affine, atol=1e-3):
            focus, size = largestDisagreement(labels, modeLabels.array, modeLabels.affine)
        else:  # a label on another grid: no voxel-wise comparison, look at the centre
            focus, size = largestDisagreement(modeLabels.array, modeLabels.array, modeLabels.affine)
        self.current = ReviewCase(caseId, volume, labelNode, modeNode, focus, size)
        self._jumpSlices(focus)
        return self.current

    def _removeCaseNodes(self) -> None:
        """Remove the previous case's nodes, except segmentations the user changed (theirs now)."""
        if self.current is None:
            return
        scene = self.core.scene
        for node in (self.current.labelNode, self.current.modeNode, self.current.volumeNode):
            if node is None or not scene.IsNodePresent(node) or not isModuleNode(node):
                continue
            if node.IsA("vtkMRMLSegmentationNode") and not isUnchangedSinceWritten(node):
                continue
            if node.IsA("vtkMRMLScalarVolumeNode") and self._referencedByKept(node):
                continue
            scene.RemoveNode(node)
        self.current = None

    def _referencedByKept(self, volumeNode) -> bool:
        from HyperSORTModule.OutputNodes import SOURCE_VOLUME_REFERENCE

        scene = self.core.scene
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
            node = scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
            if node.GetNodeReference(SOURCE_VOLUME_REFERENCE) is volumeNode:
                return True
        return False

    def _jumpSlices(self, ras: np.ndarray) -> None:
        scene = self.core.scene
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            scene.GetNthNodeByClass(index, "vtkMRMLSliceNode").JumpSliceByCentering(*[float(v) for v in ras])
