"""The review queue in the module's Qt-free logic on a real MRML scene: ranked table, a case shown
with its label and the main mode's segmentation centred on their largest disagreement, verdicts
written to review.csv after each one and resumed."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from HyperSORTModule.SelfTest import AUDIT_RANKS  # noqa: E402
from HyperSORTLib.analysis.review import read_review, review_path  # noqa: E402
from HyperSORTModule import SegmentationNodes, VolumeNodes  # noqa: E402
from HyperSORTModule.CoreLogic import HyperSORTCoreLogic  # noqa: E402
from HyperSORTModule.Errors import HyperSORTError  # noqa: E402
from HyperSORTModule.ReviewLogic import largestDisagreement  # noqa: E402


@pytest.fixture
def review(scene, audited_run):
    run, dataset = audited_run
    core = HyperSORTCoreLogic(scene)
    core.loadRun(run, device="cpu")
    core.review.start("dr.a", dataset=str(dataset))
    return core.review, run, dataset


def test_table_lists_suspects_by_rank_and_marks_reviewed_cases(review):
    logic, run, _ = review
    rows = logic.rows()
    assert [r.caseId for r in rows] == sorted(AUDIT_RANKS, key=AUDIT_RANKS.get)
    assert all(r.verdict == "" for r in rows)
    logic.loadCase("case_004")
    assert logic.record("wrong", "ball_b missing") == "case_002"
    assert [r.verdict for r in logic.rows()][:2] == ["wrong", ""]
    assert [r.caseId for r in logic.rows(cluster="1")] == ["case_004", "case_002"]
    assert read_review(review_path(run))["case_004"].note == "ball_b missing"


def test_a_case_is_shown_with_its_label_and_the_main_mode_on_its_grid(review):
    logic, _, dataset = review
    shown = logic.loadCase("case_002")
    image = nib.load(str(dataset / "imagesTr" / "case_002_0000.nii.gz"))
    label = np.asarray(nib.load(str(dataset / "labelsTr" / "case_002.nii.gz")).dataobj)
    np.testing.assert_array_equal(VolumeNodes.volumeArrayIJK(shown.volumeNode), np.asarray(image.dataobj))
    np.testing.assert_allclose(VolumeNodes.ijkToRas(shown.volumeNode), image.affine)
    counts = SegmentationNodes.segmentVoxelCounts(shown.labelNode, logic.core.classNames)
    assert counts == {"ball_a": int((label == 1).sum()), "ball_b": int((label == 2).sum())}
    assert shown.modeNode.GetAttribute("HyperSORT.Point") == "main mode"
    assert shown.labelNode.GetDisplayNode().GetVisibility2DFill()
    assert shown.modeNode.GetDisplayNode().GetVisibility2DOutline()
    assert not shown.modeNode.GetDisplayNode().GetVisibility2DFill()


def test_next_case_replaces_the_previous_nodes_but_keeps_edited_ones(review, scene):
    logic, _, _ = review
    first = logic.loadCase("case_004")
    first.labelNode.GetSegmentation().AddEmptySegment("correction")  # the reviewer started fixing it
    logic.loadCase("case_002")
    assert scene.IsNodePresent(first.labelNode) and scene.IsNodePresent(first.volumeNode)
    assert not scene.IsNodePresent(first.modeNode)


def test_largest_disagreement_is_the_centre_of_the_largest_differing_region():
    a = np.zeros((20, 20, 20), np.uint8)
    b = a.copy()
    b[2:4, 2:4, 2:4] = 1  # 8 voxels
    b[10:15, 12:17, 4:7] = 2  # 75 voxels: the largest
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    centre, size = largestDisagreement(a, b, affine)
    assert size == 75
    np.testing.assert_allclose(centre, [10 + 2 * 12, 20 + 2 * 14, 30 + 3 * 5])


def test_review_needs_a_name_and_a_selected_case(scene, audited_run):
    run, dataset = audited_run
    core = HyperSORTCoreLogic(scene)
    core.loadRun(run, device="cpu")
    with pytest.raises(HyperSORTError, match="Enter your name"):
        core.review.start("  ")
    core.review.start("dr.a", dataset=str(dataset))
    with pytest.raises(HyperSORTError, match="Select a case"):
        core.review.record("wrong")
    with pytest.raises(HyperSORTError, match="not in the dataset"):
        core.review.loadCase("case_999")
