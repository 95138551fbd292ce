"""Dataset readers (nnU-Net/MSD, AMOS, TotalSegmentator, CSV), class selection and load_label."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_helpers import (AMOS_VALUES, NNUNET_CLASSES, TS_IDS, abdomen, make_amos, make_aorta_subject, make_csv,
                          make_nnunet, make_totalsegmentator, requires_ct, save)
from HyperSORTLib.data import CaseList, CaseRecord, LabelError, case_list_from_source, load_label, read_dataset
from HyperSORTLib.data.readers import DatasetFormatError, detect_format, normalize_classes, parse_classes

pytestmark = requires_ct


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    nnunet = make_nnunet(root / "nnunet")
    return {"nnunet": nnunet, "amos": make_amos(root / "amos"), "totalsegmentator": make_totalsegmentator(root / "ts"),
            "csv": make_csv(root / "lists", nnunet)}


def _raw(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def test_parse_classes_syntax():
    assert parse_classes("liver") == [("liver", "liver")]
    assert parse_classes(" liver , kidney_left=left kidney,6=liver2 ") == [
        ("liver", "liver"), ("kidney_left", "left kidney"), ("6", "liver2")]
    assert parse_classes("") is None
    with pytest.raises(ValueError, match="SOURCE=NAME"):
        parse_classes("liver=")
    with pytest.raises(ValueError, match="more than one class"):
        normalize_classes({"liver": "organ", "spleen": "organ"})
    with pytest.raises(ValueError, match="background"):
        normalize_classes(["background", "liver"])


def test_detect_format(datasets):
    for fmt, path in datasets.items():
        assert detect_format(path) == fmt
        if fmt != "csv":  # a CSV list needs class names
            assert read_dataset(path).layout == fmt


def test_nnunet_reader_and_selection(datasets):
    full = read_dataset(datasets["nnunet"], "msd")
    assert full.class_names == ("background", *NNUNET_CLASSES) and full.label_values is None
    assert full.case_ids == ("case_000", "case_001", "case_002", "case_003")
    case = full.cases[1]
    labels, image = load_label(case, full)
    raw = _raw(case.label)
    np.testing.assert_array_equal(labels, raw)  # file voxel order, no reorientation (this case is LPS)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")

    # select + rename + reorder: spleen first, then liver
    sel = read_dataset(datasets["nnunet"], classes={"Spleen": "milz", "liver": "leber"})
    assert sel.class_names == ("background", "milz", "leber") and sel.label_values == (0, 2, 1)
    labels, _ = load_label(case, sel)
    np.testing.assert_array_equal(labels == 1, raw == 2)
    np.testing.assert_array_equal(labels == 2, raw == 1)
    assert not ((raw == 3) & (labels != 0)).any()  # unselected kidney -> background
    assert labels.dtype == np.uint8

    with pytest.raises(ValueError, match="no class named 'livr'.*Did you mean 'liver'"):
        read_dataset(datasets["nnunet"], classes=["livr"])


def test_amos_ct_only_aliases_and_values(datasets):
    amos = read_dataset(datasets["amos"])
    assert amos.layout == "amos" and len(amos.class_names) == 16
    assert "amos_0541" not in amos.case_ids and amos.case_ids == ("amos_0001", "amos_0004", "amos_0009")
    assert read_dataset(datasets["amos"], modality="all").case_ids[-1] == "amos_0541"
    assert read_dataset(datasets["amos"], modality="MRI").case_ids == ("amos_0541",)

    liver = read_dataset(datasets["amos"], "amos", ["liver"])
    assert liver.class_names == ("background", "liver") and liver.label_values == (0, AMOS_VALUES["liver"])
    labels, _ = load_label(liver.cases[0], liver)
    np.testing.assert_array_equal(labels, (_raw(liver.cases[0].label) == AMOS_VALUES["liver"]).astype(np.uint8))

    aliased = read_dataset(datasets["amos"], classes="aorta,kidney_left=left kidney,postcava")
    assert aliased.class_names == ("background", "aorta", "left kidney", "postcava")
    assert aliased.label_values == (0, 8, 3, 9)
    with pytest.raises(ValueError, match="does not take"):
        read_dataset(datasets["amos"], "amos", split="train")


def test_totalsegmentator_masks_split_and_overlap(datasets, tmp_path):
    ts = read_dataset(datasets["totalsegmentator"], classes=["kidney_right", "liver"])
    assert ts.layout == "totalsegmentator" and ts.case_ids == ("s0001", "s0002", "s0003")
    assert ts.class_names == ("background", "kidney_right", "liver")
    case = ts.cases[1]
    assert [p.name for p in case.masks] == ["kidney_right.nii.gz", "liver.nii.gz"]
    labels, image = load_label(case, ts)
    _, source, _ = abdomen(4, "lps")
    np.testing.assert_array_equal(labels == 1, source == TS_IDS["kidney_right"])
    np.testing.assert_array_equal(labels == 2, source == TS_IDS["liver"])
    np.testing.assert_allclose(image.affine, nib.load(str(case.image)).affine)

    all_structures = read_dataset(datasets["totalsegmentator"])
    assert all_structures.class_names[1:] == tuple(sorted(["liver", "spleen", "kidney_left", "kidney_right", "aorta"]))
    assert read_dataset(datasets["totalsegmentator"], split="test").case_ids == ("s0003",)

    # overlapping masks: the class listed first keeps the shared voxels
    root = tmp_path / "overlap"
    image, label, affine = abdomen()
    save(root / "s1" / "ct.nii.gz", image, affine)
    a = label == TS_IDS["liver"]
    b = np.roll(a, 3, axis=0)
    save(root / "s1" / "segmentations" / "a.nii.gz", a.astype(np.uint8), affine)
    save(root / "s1" / "segmentations" / "b.nii.gz", b.astype(np.uint8) * 255, affine)
    both = (a & b).sum()
    assert both > 0
    for order, first in ((["a", "b"], a), (["b", "a"], b)):
        cl = read_dataset(root, "totalsegmentator", order)
        labels, _ = load_label(cl.cases[0], cl)
        assert ((labels == 1) == first).all()
        assert (labels == 2).sum() == (a | b).sum() - first.sum()

    with pytest.raises(ValueError, match="no class named 'livre'"):
        read_dataset(datasets["totalsegmentator"], classes=["livre"])


def test_real_totalsegmentator_masks_lps(tmp_path):
    """A subject with the real C_aorta masks, stored LPS: the masks combine into one label map."""
    subject = make_aorta_subject(tmp_path / "ts")
    cl = read_dataset(tmp_path / "ts", classes="aorta,celiac_trunk=celiac")
    labels, image = load_label(cl.cases[0], cl)
    aorta = _raw(subject / "segmentations" / "aorta.nii.gz") != 0
    celiac = _raw(subject / "segmentations" / "celiac_trunk.nii.gz") != 0
    assert aorta.any() and celiac.any()
    np.testing.assert_array_equal(labels == 1, aorta)
    np.testing.assert_array_equal(labels == 2, celiac & ~aorta)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")


def test_csv_list(datasets, tmp_path):
    path = datasets["csv"]
    cl = read_dataset(path, classes="2=spleen,1=liver")
    assert cl.layout == "csv" and cl.case_ids[0] == "p_case_000"
    assert cl.cases[0].image.is_file() and cl.cases[0].label.is_file()  # relative to the CSV's folder
    assert cl.class_names == ("background", "spleen", "liver") and cl.label_values == (0, 2, 1)
    ordered = read_dataset(path, classes=["liver", "spleen", "kidney_left"])
    assert ordered.label_values is None and ordered.class_names[1] == "liver"
    with pytest.raises(DatasetFormatError, match="does not name its classes"):
        read_dataset(path)
    # a dataset.json beside the list names the classes
    (path.parent / "dataset.json").write_text((datasets["nnunet"] / "dataset.json").read_text())
    try:
        assert read_dataset(path, classes=["spleen"]).label_values == (0, 2)
    finally:
        (path.parent / "dataset.json").unlink()
    bad = tmp_path / "bad.csv"
    bad.write_text("img,lbl\na,b\n")
    with pytest.raises(DatasetFormatError, match="image,label"):
        read_dataset(bad)
    no_ids = make_csv(tmp_path / "noid", datasets["nnunet"], ids=False)
    assert read_dataset(no_ids, classes=["liver"]).case_ids[0] == "case_000"


def test_source_round_trip(datasets):
    for fmt, classes, options in (("amos", "liver,spleen=milz", {"modality": "all"}),
                                  ("totalsegmentator", ["liver"], {"split": "train"}),
                                  ("csv", {"1": "liver"}, {}), ("nnunet", None, {})):
        cl = read_dataset(datasets[fmt], classes=classes, **options)
        source = json.loads(json.dumps(cl.source))  # as stored in config.json
        assert source["format"] == fmt
        again = case_list_from_source(source)
        assert again == cl
        reduced = cl.without([cl.case_ids[0]])
        assert case_list_from_source(json.loads(json.dumps(reduced.source))).case_ids == cl.case_ids[1:]


def test_load_label_errors(tmp_path):
    image, label, affine = abdomen()
    save(tmp_path / "l.nii.gz", organ_free := (label > 0).astype(np.float32) * 2.5, affine)
    case = CaseRecord("c1", tmp_path / "i.nii.gz", tmp_path / "l.nii.gz")
    with pytest.raises(LabelError, match="c1.*non-integer"):
        load_label(case, CaseList((case,), ("background", "x"), tmp_path))
    save(tmp_path / "l.nii.gz", np.rint(organ_free).astype(np.int16), affine)
    with pytest.raises(LabelError, match=r"c1.*values \[2\] are outside the class map 0..1"):
        load_label(case, CaseList((case,), ("background", "x"), tmp_path))
    with pytest.raises(FileNotFoundError, match="c2.*does not exist"):
        missing = CaseRecord("c2", tmp_path / "i.nii.gz", tmp_path / "nope.nii.gz")
        load_label(missing, CaseList((missing,), ("background", "x"), tmp_path))
