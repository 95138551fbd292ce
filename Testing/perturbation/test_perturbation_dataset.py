"""``hypersort perturb``: perturbed copies in the nnU-Net, TotalSegmentator-masks and CSV layouts
(real CT geometry, oblique and LPS affines), the manifest, safety of the source, resuming."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from data_helpers import make_aorta_subject, make_csv, make_nnunet, make_totalsegmentator, requires_ct
from HyperSORTLib.cli import main
from HyperSORTLib.data import load_label, read_dataset
from HyperSORTLib.data.manifest import read_manifest, read_manifest_rows
from HyperSORTLib.demo import CohortSpec, generate_cohort
from HyperSORTLib.perturbation import dice_per_class, runner
from HyperSORTLib.perturbation.plan import PerturbationPlan
from HyperSORTLib.perturbation.registry import SPECS
from HyperSORTLib.perturbation.runner import DestinationError, perturb_dataset

pytestmark = requires_ct

NNUNET_PLAN = """\
seed: 11
groups:
  - name: liver_big
    cases: [case_000]
    perturbations:
      - dilate_class: {class_id: liver, mm: [6, 7]}
  - name: no_spleen
    cases: [case_001]
    perturbations:
      - omit_class: {class_id: spleen}
  - name: merged
    cases: [case_002]
    perturbations:
      - merge_classes: {source: spleen, target: liver}
      - gaussian_field_deform: {std_mm: 4, correlation_mm: 30}
  - name: errors
    cases: [case_003]
    erroneous: true
    perturbations:
      - translate_label: {distance_mm: 12}
"""


def tree_digest(root: Path) -> dict[str, str]:
    """Every file (and link target) under ``root`` with its content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = "link:" + str(Path(path).readlink())
        elif path.is_file():
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def manifest_rows(dst: Path) -> list[dict[str, str]]:
    return read_manifest_rows(dst / "manifest.csv")


def reproduce(row: dict[str, str], clean: np.ndarray, class_names, spacing, donors=None) -> np.ndarray:
    """Apply the perturbations a manifest row records, from the recorded parameters alone."""
    if row["perturbation"] == "none":
        return clean
    names = row["perturbation"].split("+")
    params = json.loads(row["params"])
    label = clean
    for name, given in zip(names, params if len(names) > 1 else [params]):
        spec = SPECS[name]
        kwargs = {}
        for key, value in given.items():
            kind = spec.param(key).kind if key in spec.param_names else None
            if key == "distance_mm":
                continue
            if kind == "class":
                value = list(class_names).index(value)
            elif kind == "classes":
                value = tuple(list(class_names).index(v) for v in value)
            elif kind == "donor":
                value = donors[value]
            kwargs[key] = value
        label = spec.apply(label, spacing, kwargs)
    return label


def header_geometry(image) -> tuple:
    h = image.header
    return (image.shape, image.get_data_dtype(), int(h["qform_code"]), int(h["sform_code"]),
            np.round(image.affine, 5).tobytes())


@pytest.fixture
def nnunet(tmp_path: Path) -> Path:
    return make_nnunet(tmp_path / "src")


def test_nnunet_copy_keeps_layout_and_geometry_and_the_manifest_reproduces_it(nnunet: Path, tmp_path: Path):
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(NNUNET_PLAN)
    before = tree_digest(nnunet)
    dst = tmp_path / "dst"
    assert main(["perturb", "--data", str(nnunet), "--out", str(dst), "--plan", str(plan_path), "--no-progress"]) == 0
    assert tree_digest(nnunet) == before  # the source is never touched

    assert (dst / "dataset.json").read_bytes() == (nnunet / "dataset.json").read_bytes()
    assert (dst / "perturb_plan.yaml").read_text() == NNUNET_PLAN
    for image in (nnunet / "imagesTr").iterdir():
        link = dst / "imagesTr" / image.name
        assert link.is_symlink() and link.resolve() == image.resolve()
        assert not Path(link.readlink()).is_absolute()

    source = read_dataset(nnunet)
    copy = read_dataset(dst)
    assert copy.case_ids == source.case_ids and copy.class_names == source.class_names
    rows = {r["case_id"]: r for r in manifest_rows(dst)}
    assert [r["group"] for r in rows.values()] == ["liver_big", "no_spleen", "merged", "errors"]
    assert [r["erroneous"] for r in rows.values()] == ["0", "0", "0", "1"]
    for case, new_case in zip(source.cases, copy.cases):
        clean, image = load_label(case, source)
        perturbed, new_image = load_label(new_case, copy)
        assert header_geometry(new_image) == header_geometry(image)  # RAS, LPS and oblique cases
        spacing = image.header.get_zooms()[:3]
        assert np.array_equal(perturbed, reproduce(rows[case.case_id], clean, source.class_names, spacing))
        assert not np.array_equal(perturbed, clean)
        dice = dice_per_class(clean, perturbed, range(1, len(source.class_names)))
        for c, name in enumerate(source.class_names[1:], start=1):
            assert float(rows[case.case_id][f"dice_{name}"]) == pytest.approx(dice[c], abs=1e-6)
    assert float(rows["case_001"]["volume_change_spleen"]) == -1.0
    assert json.loads(rows["case_002"]["params"])[1]["std_mm"] == 4.0  # several perturbations: a list
    manifest = read_manifest(dst / "manifest.csv", copy.case_ids)  # the audit reads it
    assert list(manifest.erroneous) == [False, False, False, True]


def test_same_manifest_columns_as_the_demo_cohort_and_dry_run(tmp_path: Path, capsys):
    spec = CohortSpec(n_cases=8, shape=(24, 20, 16), spacing=(14.0, 14.0, 16.0), n_liver_dilated=1,
                      n_spleen_missing=1, n_erroneous=1)
    cohort = generate_cohort(tmp_path / "demo", spec, seed=1)
    assert main(["perturb", "--data", str(cohort.root), "--plan", "amos-style", "--dry-run"]) == 0
    assert "8 cases" in capsys.readouterr().out
    assert main(["perturb", "--data", str(cohort.root), "--out", str(tmp_path / "out"), "--plan", "amos-style",
                 "--no-progress"]) == 0
    with open(cohort.root / "manifest.csv", encoding="utf-8") as demo, open(tmp_path / "out" / "manifest.csv") as ours:
        assert next(csv.reader(ours)) == next(csv.reader(demo))
    # The demo's own manifest and plan copy are not carried over; its clean labels are linked.
    assert (tmp_path / "out" / "labelsClean" / "case_000.nii.gz").is_symlink()
    assert main(["perturb", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in SPECS) and "amos-style" in listing


def test_refuses_destinations_inside_or_around_the_source(nnunet: Path, tmp_path: Path, capsys):
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(NNUNET_PLAN)
    before = tree_digest(nnunet)
    for dst, fragment in ((nnunet, "inside the source"), (nnunet / "out", "inside the source"),
                          (tmp_path, "is inside the destination")):
        assert main(["perturb", "--data", str(nnunet), "--out", str(dst), "--plan", str(plan_path),
                     "--no-progress"]) == 2
        assert fragment in capsys.readouterr().err
    assert tree_digest(nnunet) == before
    assert main(["perturb", "--data", str(nnunet), "--out", str(tmp_path / "x"), "--plan", "amos-style",
                 "--no-progress"]) == 2
    assert "class 'right kidney' is not a class of this dataset" in capsys.readouterr().err


def test_existing_destination_is_resumed_refused_or_overwritten(nnunet: Path, tmp_path: Path, monkeypatch):
    case_list = read_dataset(nnunet)
    plan = PerturbationPlan.from_dict(yaml.safe_load(NNUNET_PLAN))
    reference = tmp_path / "reference"
    perturb_dataset(case_list, reference, plan)

    # A run killed after two cases: complete files only, no manifest yet.
    dst = tmp_path / "dst"
    calls = {"n": 0}
    original = runner.write_label_file

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "write_label_file", failing)
    with pytest.raises(KeyboardInterrupt):
        perturb_dataset(case_list, dst, plan)
    monkeypatch.setattr(runner, "write_label_file", original)
    assert not (dst / "manifest.csv").exists()
    assert not [p for p in dst.rglob("*") if p.name.endswith(".tmp")]
    assert len(list((dst / "labelsTr").iterdir())) == 2

    result = perturb_dataset(case_list, dst, plan)  # the same command completes the run
    assert result.reused == 2
    assert tree_digest(dst / "labelsTr") == tree_digest(reference / "labelsTr")
    assert (dst / "manifest.csv").read_bytes() == (reference / "manifest.csv").read_bytes()

    with pytest.raises(DestinationError, match="another plan or from another source"):
        perturb_dataset(case_list, dst, PerturbationPlan.from_dict({**yaml.safe_load(NNUNET_PLAN), "seed": 12}))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DestinationError, match="not a perturbed copy"):
        perturb_dataset(case_list, other, plan)
    perturb_dataset(case_list, other, plan, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    assert (other / "manifest.csv").read_bytes() == (reference / "manifest.csv").read_bytes()


def test_rerun_redoes_a_case_whose_source_label_changed(nnunet: Path, tmp_path: Path):
    plan = PerturbationPlan.from_dict(yaml.safe_load(NNUNET_PLAN))
    dst = tmp_path / "dst"
    perturb_list = read_dataset(nnunet)
    perturb_dataset(perturb_list, dst, plan)
    kept = tree_digest(dst / "labelsTr")

    # The source label of case_001 (spleen omitted) is corrected after the first run: its liver erased.
    source = nnunet / "labelsTr" / "case_001.nii.gz"
    image = nib.load(source)
    data = np.asarray(image.dataobj).copy()
    liver = perturb_list.class_names.index("liver")
    assert (data == liver).any()
    data[data == liver] = 0
    nib.save(nib.Nifti1Image(data, image.affine, image.header), source)

    result = perturb_dataset(read_dataset(nnunet), dst, plan)
    assert result.reused == len(perturb_list.cases) - 1
    redone = np.asarray(nib.load(dst / "labelsTr" / "case_001.nii.gz").dataobj)
    assert not (redone == liver).any()  # the copy follows the new source, not the old one
    after = tree_digest(dst / "labelsTr")
    assert {k for k in kept if kept[k] != after[k]} == {"case_001.nii.gz"}
    row = next(r for r in manifest_rows(dst) if r["case_id"] == "case_001")
    assert row["dice_liver"] == "1.000000"  # liver absent from both: the row was recomputed too


def test_class_selection_keeps_unselected_values_in_label_files(nnunet: Path, tmp_path: Path):
    case_list = read_dataset(nnunet, classes="spleen,liver")  # kidney_left (3) not selected
    assert case_list.label_values == (0, 2, 1)
    plan = PerturbationPlan.from_dict({"seed": 0, "groups": [
        {"name": "no_spleen", "cases": ["case_000"], "perturbations": [{"omit_class": {"class_id": "spleen"}}]},
        {"name": "liver_big", "cases": ["case_002"],
         "perturbations": [{"dilate_class": {"class_id": "liver", "mm": 12}}]}]})
    perturb_dataset(case_list, tmp_path / "dst", plan)

    def values(root, case_id):
        return np.asanyarray(nib.load(root / "labelsTr" / f"{case_id}.nii.gz").dataobj)

    before, after = values(nnunet, "case_000"), values(tmp_path / "dst", "case_000")
    assert np.array_equal(after, np.where(before == 2, 0, before))  # spleen (value 2) gone, the rest as stored
    before, after = values(nnunet, "case_002"), values(tmp_path / "dst", "case_002")
    changed = before != after
    assert changed.any() and (after[changed] == 1).all()  # only liver (value 1) grew
    assert np.array_equal(after == 2, before == 2)
    # kidney_left is background for this selection: the liver may grow into it, nowhere else changes it
    assert ((before == 3) & (after != 3) & (after != 1)).sum() == 0
    copy = read_dataset(tmp_path / "dst", classes="spleen,liver")
    for case, new_case in zip(case_list.cases, copy.cases):
        clean, image = load_label(case, case_list)
        row = {r["case_id"]: r for r in manifest_rows(tmp_path / "dst")}[case.case_id]
        expected = reproduce(row, clean, case_list.class_names, image.header.get_zooms()[:3])
        assert np.array_equal(load_label(new_case, copy)[0], expected)


def test_totalsegmentator_masks_are_written_back_as_binary_masks(tmp_path: Path):
    src = make_totalsegmentator(tmp_path / "ts")
    classes = "liver,spleen,kidney_right,kidney_left"
    case_list = read_dataset(src, "totalsegmentator", classes)
    plan = PerturbationPlan.from_dict({"seed": 2, "groups": [
        {"name": "liver_big", "cases": ["s0001"], "perturbations": [{"dilate_class": {"class_id": "liver", "mm": 6}}]},
        {"name": "no_spleen", "cases": ["s0002"], "perturbations": [{"omit_class": {"class_id": "spleen"}}]},
        {"name": "swapped", "cases": ["s0003"], "perturbations": [
            {"swap_classes": {"a": "kidney_right", "b": "kidney_left"}}]}]})
    before = tree_digest(src)
    dst = tmp_path / "out"
    perturb_dataset(case_list, dst, plan)
    assert tree_digest(src) == before
    assert (dst / "meta.csv").read_bytes() == (src / "meta.csv").read_bytes()
    assert (dst / "s0001" / "ct.nii.gz").is_symlink()

    def mask(root, subject, name):
        image = nib.load(root / subject / "segmentations" / f"{name}.nii.gz")
        return np.asanyarray(image.dataobj), image

    for subject in ("s0001", "s0002", "s0003"):
        for name in ("liver", "spleen", "kidney_right", "kidney_left", "aorta"):
            new, new_image = mask(dst, subject, name)
            old, old_image = mask(src, subject, name)
            assert header_geometry(new_image) == header_geometry(old_image)
            assert set(np.unique(new)) <= {0, 1}
            untouched = (subject, name) not in {("s0001", "liver"), ("s0002", "spleen"), ("s0003", "kidney_right"),
                                                ("s0003", "kidney_left")}
            if untouched:  # copied byte for byte (the unselected aorta included)
                path = Path(subject) / "segmentations" / f"{name}.nii.gz"
                assert (dst / path).read_bytes() == (src / path).read_bytes(), path
    assert not mask(dst, "s0002", "spleen")[0].any()
    assert np.array_equal(mask(dst, "s0003", "kidney_left")[0], mask(src, "s0003", "kidney_right")[0])
    assert np.array_equal(mask(dst, "s0003", "kidney_right")[0], mask(src, "s0003", "kidney_left")[0])
    grown, _ = mask(dst, "s0001", "liver")
    assert grown.sum() > mask(src, "s0001", "liver")[0].sum()
    copy = read_dataset(dst, "totalsegmentator", classes)
    rows = {r["case_id"]: r for r in manifest_rows(dst)}
    for case, new_case in zip(case_list.cases, copy.cases):
        clean, image = load_label(case, case_list)
        expected = reproduce(rows[case.case_id], clean, case_list.class_names, image.header.get_zooms()[:3])
        assert np.array_equal(load_label(new_case, copy)[0], expected)


def test_real_overlapping_masks_combine_back_to_the_perturbed_label(tmp_path: Path):
    root = tmp_path / "ts"
    make_aorta_subject(root)
    case_list = read_dataset(root, "totalsegmentator")  # every structure, some masks overlap
    aorta = case_list.class_names.index("aorta")
    plan = PerturbationPlan.from_dict({"seed": 0, "groups": [{"name": "thin", "fraction": 1.0, "perturbations": [
        {"erode_class": {"class_id": "aorta", "mm": 4.5}}, {"shift_class": {"class_id": "aorta_true_lumen",
                                                                            "shift_mm": [0, 0, 9]}}]}]})
    perturb_dataset(case_list, tmp_path / "out", plan)
    clean, image = load_label(case_list.cases[0], case_list)
    copy = read_dataset(tmp_path / "out", "totalsegmentator")
    perturbed, new_image = load_label(copy.cases[0], copy)
    row = manifest_rows(tmp_path / "out")[0]
    assert np.array_equal(perturbed, reproduce(row, clean, case_list.class_names, image.header.get_zooms()[:3]))
    assert (perturbed == aorta).sum() < (clean == aorta).sum()
    assert header_geometry(new_image) == header_geometry(image)


def test_csv_list_points_to_the_perturbed_labels_and_the_original_images(tmp_path: Path):
    nn = make_nnunet(tmp_path / "nn")
    csv_path = make_csv(tmp_path / "lists", nn)  # paths ../nn/... outside the list's folder
    classes = "1=liver,2=spleen,3=kidney_left"
    case_list = read_dataset(csv_path, "csv", classes)
    plan = PerturbationPlan.from_dict({"seed": 4, "groups": [
        {"name": "gone", "fraction": 0.5, "erroneous": True, "perturbations": ["empty_label"]}]})
    before = tree_digest(nn)
    dst = tmp_path / "perturbed"
    perturb_dataset(case_list, dst, plan)
    assert tree_digest(nn) == before
    copy = read_dataset(dst / "cases.csv", "csv", classes)
    assert copy.case_ids == case_list.case_ids
    rows = {r["case_id"]: r for r in manifest_rows(dst)}
    for case, new_case in zip(case_list.cases, copy.cases):
        assert new_case.image.resolve() == case.image.resolve()  # images stay where they are
        assert dst.resolve() in new_case.label.resolve().parents
        perturbed, image = load_label(new_case, copy)
        assert perturbed.any() == (rows[case.case_id]["group"] == "clean")
        assert header_geometry(image) == header_geometry(load_label(case, case_list)[1])


@pytest.mark.slow
def test_parallel_workers_give_the_same_copy(nnunet: Path, tmp_path: Path):
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(NNUNET_PLAN)
    for name, workers in (("one", "1"), ("two", "2")):
        assert main(["perturb", "--data", str(nnunet), "--out", str(tmp_path / name), "--plan", str(plan_path),
                     "--workers", workers, "--no-progress"]) == 0
    one, two = tree_digest(tmp_path / "one"), tree_digest(tmp_path / "two")
    assert {k: v for k, v in one.items() if not k.startswith(".")} == {k: v for k, v in two.items()
                                                                        if not k.startswith(".")}
