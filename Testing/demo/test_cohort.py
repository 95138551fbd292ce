"""The built-in biased demo cohort: layout, determinism, visible biases, round trip, validation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from HyperSORTLib.demo import CLASS_NAMES, Cohort, CohortSpec, generate_cohort, make_phantom
from HyperSORTLib.demo.cohort import ERROR_KINDS

# Coarse grid with about the default field of view, so the anatomy fits and generation is fast.
TINY = CohortSpec(n_cases=10, shape=(24, 20, 16), spacing=(14.0, 14.0, 16.0),
                  n_liver_dilated=2, n_spleen_missing=2, n_erroneous=4, liver_dilation_mm=14.0)


def _array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _manifest(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory) -> Cohort:
    return generate_cohort(tmp_path_factory.mktemp("cohort"), TINY, seed=3)


def test_layout_and_nifti_geometry(tiny_cohort: Cohort):
    root = tiny_cohort.root
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {name: i for i, name in enumerate(CLASS_NAMES)}
    assert meta["numTraining"] == TINY.n_cases and meta["file_ending"] == ".nii.gz"
    assert meta["description"]
    assert tiny_cohort.case_ids == [f"case_{i:03d}" for i in range(TINY.n_cases)]
    for case_id in tiny_cohort.case_ids:
        image = nib.load(tiny_cohort.image_path(case_id))
        label = nib.load(tiny_cohort.label_path(case_id))
        clean = nib.load(tiny_cohort.clean_label_path(case_id))
        assert image.shape == label.shape == clean.shape == TINY.shape
        assert np.allclose(image.affine, label.affine) and np.allclose(image.affine, clean.affine)
        assert np.allclose(np.abs(np.diag(image.affine)[:3]), TINY.spacing)
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        assert int(image.header["qform_code"]) > 0 and int(image.header["sform_code"]) > 0
        for lab in (label, clean):
            assert lab.get_data_dtype() == np.uint8
            assert set(np.unique(np.asarray(lab.dataobj))) <= set(range(len(CLASS_NAMES)))
        assert -1100 <= float(np.asarray(image.dataobj).min()) and float(np.asarray(image.dataobj).max()) < 3072


def test_group_sizes_and_shuffled_assignment(tiny_cohort: Cohort):
    sizes = {g: tiny_cohort.groups.count(g) for g in set(tiny_cohort.groups)}
    assert sizes == {"clean": 2, "liver_dilated": 2, "spleen_missing": 2, "erroneous": 4}
    assert tiny_cohort.erroneous == [g == "erroneous" for g in tiny_cohort.groups]
    rows = _manifest(tiny_cohort.root)
    kinds = [r["perturbation"] for r in rows if r["group"] == "erroneous"]
    assert sorted(kinds) == sorted(ERROR_KINDS) == sorted(["replace_label", "translate_label", "elastic_deform",
                                                          "remove_slices"])
    for r in rows:
        json.loads(r["params"])  # compact JSON, parseable


def test_biases_are_visible_in_manifest_and_files(tiny_cohort: Cohort):
    for row in _manifest(tiny_cohort.root):
        case_id, group = row["case_id"], row["group"]
        train = _array(tiny_cohort.label_path(case_id))
        clean = _array(tiny_cohort.clean_label_path(case_id))
        dice = {n: float(row[f"dice_{n}"]) for n in CLASS_NAMES[1:]}
        if group == "clean":
            assert all(d == 1.0 for d in dice.values()) and np.array_equal(train, clean)
            assert row["erroneous"] == "0"
        elif group == "liver_dilated":
            assert float(row["volume_change_liver"]) > 0 and dice["liver"] < 1.0
            assert dice["spleen"] == dice["right_kidney"] == dice["left_kidney"] == 1.0
        elif group == "spleen_missing":
            assert not (train == CLASS_NAMES.index("spleen")).any()
            assert (clean == CLASS_NAMES.index("spleen")).any()
            assert float(row["volume_change_spleen"]) == -1.0 and dice["spleen"] == 0.0
        else:
            assert row["erroneous"] == "1"
            assert min(dice.values()) < 0.9


def test_determinism_same_seed_identical_different_seed_differs(tmp_path: Path):
    spec = CohortSpec(n_cases=4, shape=(24, 20, 16), spacing=(14.0, 14.0, 16.0),
                      n_liver_dilated=1, n_spleen_missing=1, n_erroneous=1)
    a = generate_cohort(tmp_path / "a", spec, seed=5)
    b = generate_cohort(tmp_path / "b", spec, seed=5)
    c = generate_cohort(tmp_path / "c", spec, seed=6)
    assert a.groups == b.groups
    for case_id in a.case_ids:
        for path_of in (Cohort.image_path, Cohort.label_path, Cohort.clean_label_path):
            assert path_of(a, case_id).read_bytes() == path_of(b, case_id).read_bytes()
    assert (a.root / "manifest.csv").read_bytes() == (b.root / "manifest.csv").read_bytes()
    assert not np.array_equal(_array(a.image_path("case_000")), _array(c.image_path("case_000")))


def test_load_round_trip(tiny_cohort: Cohort):
    loaded = Cohort.load(tiny_cohort.root)
    assert loaded == tiny_cohort
    assert loaded.class_names == list(CLASS_NAMES)
    assert loaded.group_of(loaded.case_ids[0]) == loaded.groups[0]
    with pytest.raises(ValueError, match="case_id"):
        loaded.image_path("case_999")


def test_regenerating_smaller_cohort_removes_stale_cases(tmp_path: Path):
    small = dict(shape=(24, 20, 16), spacing=(14.0, 14.0, 16.0), n_liver_dilated=0, n_spleen_missing=0,
                 n_erroneous=0)
    generate_cohort(tmp_path, CohortSpec(n_cases=3, **small), seed=0)
    cohort = generate_cohort(tmp_path, CohortSpec(n_cases=2, **small), seed=0)
    assert sorted(p.name for p in (tmp_path / "labelsTr").iterdir()) == ["case_000.nii.gz", "case_001.nii.gz"]
    assert Cohort.load(tmp_path).case_ids == cohort.case_ids


def test_single_case_other_label_error(tmp_path: Path):
    spec = CohortSpec(n_cases=1, shape=(24, 20, 16), spacing=(14.0, 14.0, 16.0),
                      n_liver_dilated=0, n_spleen_missing=0, n_erroneous=1)
    cohort = generate_cohort(tmp_path, spec, seed=0)
    assert cohort.erroneous == [True]


def test_default_phantom_has_every_organ():
    phantom = make_phantom(np.random.default_rng(0))
    counts = np.bincount(phantom.label.ravel(), minlength=len(CLASS_NAMES))
    assert phantom.image.dtype == np.float32 and phantom.label.dtype == np.uint8
    assert phantom.image.shape == (48, 40, 32)
    assert counts[1] > counts[2] and all(c >= 150 for c in counts[1:])
    # RAS: +x is the patient's right, so liver and right kidney at x > 0, spleen and left kidney at x < 0
    # (the real TotalSegmentator example scan has its liver at x = +67 mm and its spleen at x = -113 mm).
    world_x = [(phantom.affine[:3, :3] @ np.argwhere(phantom.label == c).mean(0) + phantom.affine[:3, 3])[0]
               for c in range(1, 5)]
    assert world_x[0] > 0 > world_x[1] and world_x[2] > 0 > world_x[3]
    assert np.allclose(phantom.affine @ [23.5, 19.5, 15.5, 1.0], [0, 0, 0, 1])


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(n_cases=5, n_liver_dilated=3, n_spleen_missing=2, n_erroneous=1), "sum to at most"),
    (dict(n_liver_dilated=-1), "n_liver_dilated"),
    (dict(n_cases=0, n_liver_dilated=0, n_spleen_missing=0, n_erroneous=0), "n_cases"),
    (dict(n_erroneous=1.5), "n_erroneous"),
    (dict(spacing=(7.0, 0.0, 8.0)), "spacing"),
    (dict(shape=(48, 40)), "shape"),
    (dict(liver_dilation_mm=-7.0), "liver_dilation_mm"),
])
def test_bad_spec_raises_value_error(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        CohortSpec(**kwargs)


def test_bad_seed_raises_value_error(tmp_path: Path):
    with pytest.raises(ValueError, match="seed"):
        generate_cohort(tmp_path, TINY, seed=-1)


def test_the_cohort_is_the_builtin_plan_applied_to_clean_phantoms(tiny_cohort: Cohort):
    from HyperSORTLib.demo import demo_plan
    from HyperSORTLib.perturbation.plan import load_plan

    shipped = load_plan("demo-cohort")  # the built-in plan describes the default 40-case cohort
    assert {g.name: g.count for g in shipped.groups} == {
        name: n for name, n in CohortSpec().group_sizes().items() if name != "clean"}
    plan = demo_plan(TINY, seed=3)
    assert {g.name: g.count for g in plan.groups} == {"liver_dilated": 2, "spleen_missing": 2, "erroneous": 4}
    # The cohort's groups are the plan's assignment of its case ids, and the applied plan is kept.
    assigned = plan.assign(tiny_cohort.case_ids)
    assert tiny_cohort.groups == [a.group for a in assigned]
    assert load_plan(tiny_cohort.root / "perturb_plan.yaml") == plan
