"""The semi-real development cohort, built tiny from the real TotalSegmentator examples: valid
files, kept classes only, determinism, the plan's groups, visible biases, check-data, refusal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from HyperSORTLib.cli import main
from HyperSORTLib.demo.cohort import Cohort
from HyperSORTLib.demo.semireal import SemirealSpec, build_semireal_cohort, default_sources, semireal_plan
from HyperSORTLib.metrics import class_volumes_ml
from HyperSORTLib.perturbation.plan import BUILTIN_PLANS, load_plan
from HyperSORTLib.utils.nifti import affine_problem, open_nifti, voxel_sizes
from Testing.data_helpers import SHARED_DATA, requires_ct

pytestmark = requires_ct

# 2 views of each of the two sources at 6 mm (one voxel of the default 6 mm liver dilation).
TINY = SemirealSpec(views_per_source=2, spacing=(6.0, 6.0, 6.0), crop_size=(48, 40, 32),
                    n_liver_dilated=1, n_liver_missing=1, n_erroneous=1)
LIVER = 1 + [name for name, _ in TINY.classes].index("liver")


def _array(path: Path) -> np.ndarray:
    return np.asarray(open_nifti(path, "cohort file").dataobj)


@pytest.fixture(scope="module")
def sources():
    return default_sources(SHARED_DATA)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, sources) -> Cohort:
    return build_semireal_cohort(sources, tmp_path_factory.mktemp("semireal"), TINY, seed=0)


def test_builtin_plan_is_listed_and_valid():
    assert "semireal-liver" in BUILTIN_PLANS
    plan = load_plan("semireal-liver")
    assert {g.name: g.count for g in plan.groups} == {"liver_dilated": 12, "liver_missing": 6, "erroneous": 6}
    assert SemirealSpec().group_sizes(2) == {"clean": 24, "liver_dilated": 12, "liver_missing": 6, "erroneous": 6}


def test_files_are_valid_nifti_with_the_kept_classes(cohort: Cohort):
    meta = json.loads((cohort.root / "dataset.json").read_text())
    assert meta["labels"] == {name: i for i, name in enumerate(TINY.class_names)}
    assert meta["numTraining"] == len(cohort.case_ids) == 2 * TINY.views_per_source
    for case_id in cohort.case_ids:
        paths = (cohort.image_path(case_id), cohort.label_path(case_id), cohort.clean_label_path(case_id))
        images = [open_nifti(path, "cohort file") for path in paths]
        for path, image in zip(paths, images):
            assert image.shape == TINY.crop_size, path
            assert affine_problem(image.affine) is None, path
            assert np.allclose(voxel_sizes(image.affine), TINY.spacing), path
            assert np.allclose(image.affine, images[0].affine), path
        hu = np.asarray(images[0].dataobj)
        assert hu.dtype == np.int16 and hu.min() >= -1024 and hu.max() > 200  # air and bone or contrast
        for image in images[1:]:
            label = np.asarray(image.dataobj)
            assert label.dtype == np.uint8
            assert set(np.unique(label)) <= set(range(len(TINY.class_names)))
        clean = np.asarray(images[2].dataobj)
        assert (clean == LIVER).sum() > 1000  # every view shows the liver


def test_manifest_matches_the_plan(cohort: Cohort):
    plan = semireal_plan(TINY, 2, seed=0)
    expected = {a.case_id: (a.group, a.erroneous) for a in plan.assign(cohort.case_ids)}
    rows = cohort.read_manifest()
    assert [r["case_id"] for r in rows] == cohort.case_ids
    assert {r["case_id"]: (r["group"], r["erroneous"] == "1") for r in rows} == expected
    counts = {g: cohort.groups.count(g) for g in set(cohort.groups)}
    assert counts == {g: n for g, n in TINY.group_sizes(2).items() if n}
    for case_id, group, erroneous in zip(cohort.case_ids, cohort.groups, cohort.erroneous):
        same = np.array_equal(_array(cohort.label_path(case_id)), _array(cohort.clean_label_path(case_id)))
        assert same == (group == "clean"), case_id
        assert erroneous == (group == "erroneous")


def test_dilated_liver_grew_by_the_margin_and_omitted_liver_is_gone(cohort: Cohort):
    spacing = TINY.spacing
    for case_id, group in zip(cohort.case_ids, cohort.groups):
        label, clean = _array(cohort.label_path(case_id)), _array(cohort.clean_label_path(case_id))
        if group == "liver_missing":
            assert not (label == LIVER).any()
            assert (clean == LIVER).any()
        if group == "liver_dilated":
            liver = clean == LIVER
            # Faces between liver and background, times the margin: the shell a dilation adds.
            faces = sum(int((liver & ~np.roll(liver, s, axis) & (np.roll(clean, s, axis) == 0)).sum())
                        for axis in range(3) for s in (1, -1))
            face_ml = spacing[0] * spacing[1] / 1000.0
            predicted = faces * face_ml * TINY.liver_dilation_mm
            grown = (class_volumes_ml(label, [LIVER], spacing)[LIVER]
                     - class_volumes_ml(clean, [LIVER], spacing)[LIVER])
            assert 0.4 * predicted < grown <= 1.05 * predicted, (case_id, grown, predicted)
            assert ((label == LIVER) >= liver).all()  # dilation only adds liver


def test_same_seed_is_byte_identical_and_another_seed_differs(cohort: Cohort, sources, tmp_path):
    again = build_semireal_cohort(sources, tmp_path / "again", TINY, seed=0)
    other = build_semireal_cohort(sources, tmp_path / "other", TINY, seed=1)
    for case_id in cohort.case_ids:
        for name in (f"labelsTr/{case_id}.nii.gz", f"labelsClean/{case_id}.nii.gz", f"imagesTr/{case_id}_0000.nii.gz"):
            assert (again.root / name).read_bytes() == (cohort.root / name).read_bytes(), name
    assert any(not np.array_equal(_array(other.clean_label_path(c)), _array(cohort.clean_label_path(c)))
               for c in cohort.case_ids)


def test_check_data_accepts_the_cohort(cohort: Cohort):
    assert main(["check-data", "--data", str(cohort.root), "--allow-empty-labels", "--no-cache"]) == 0


def test_a_folder_with_foreign_files_is_refused_without_overwrite(sources, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("not a cohort")
    with pytest.raises(ValueError, match="not empty"):
        build_semireal_cohort(sources, out, TINY, seed=0)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    built = build_semireal_cohort(sources, out, TINY, seed=0, overwrite=True)
    assert (out / "notes.txt").is_file() and len(built.case_ids) == 4


def test_bad_spec_and_sources_are_explained(tmp_path):
    with pytest.raises(ValueError, match="exceed the 4 views"):
        SemirealSpec(views_per_source=2, n_liver_dilated=3, n_liver_missing=1, n_erroneous=1).group_sizes(2)
    with pytest.raises(ValueError, match="'liver'"):
        SemirealSpec(classes=(("spleen", 1),))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        default_sources(tmp_path)


def test_a_source_without_liver_or_off_its_grid_is_refused(tmp_path):
    import nibabel as nib

    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    ct, label, shifted = tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz", tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.int16), affine), ct)
    spleen_only = np.zeros((20, 20, 20), np.uint8)
    spleen_only[5:10, 5:10, 5:10] = 1
    nib.save(nib.Nifti1Image(spleen_only, affine), label)
    moved = affine.copy()
    moved[0, 3] = 30.0
    nib.save(nib.Nifti1Image(spleen_only, moved), shifted)
    one_source = dataclasses.replace(TINY, n_liver_dilated=0, n_liver_missing=0, n_erroneous=1)
    with pytest.raises(ValueError, match=r"label\.nii\.gz has no liver voxel"):
        build_semireal_cohort([(ct, label)], tmp_path / "out", one_source)
    assert not (tmp_path / "out").exists()  # sources are checked before anything is written
    with pytest.raises(ValueError, match=r"shifted\.nii\.gz does not lie on the grid"):
        build_semireal_cohort([(ct, shifted)], tmp_path / "out", one_source)
