"""Dataset checks, ``hypersort check-data`` and the checks ``hypersort train`` runs first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from data_helpers import copy_tree, corrupt, make_csv, make_nnunet, make_totalsegmentator, requires_ct
from HyperSORTLib.cli import main
from HyperSORTLib.data import case_list_from_source, read_dataset
from HyperSORTLib.data.cache import PreprocessCache
from HyperSORTLib.data.validation import check_cases
from HyperSORTLib import rundir

pytestmark = requires_ct

CASES = tuple((f"case_{i:03d}", i % 4, ("ras", "lps", "oblique")[i % 3]) for i in range(12))

# case -> (corruption, problem reported)
BROKEN = {
    "case_001": ("truncated", "truncated"),
    "case_002": ("unreadable", "unreadable"),
    "case_003": ("missing", "missing file"),
    "case_004": ("shape", "shape mismatch"),
    "case_005": ("affine", "affine mismatch"),
    "case_006": ("values", "label values"),
    "case_007": ("nan", "NaN/inf"),
    "case_008": ("empty", "empty label"),
    "case_009": ("spacing", "absurd spacing"),
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return make_nnunet(tmp_path_factory.mktemp("valid") / "clean", cases=CASES)


@pytest.fixture(scope="module")
def broken(clean, tmp_path_factory) -> Path:
    root = copy_tree(clean, tmp_path_factory.mktemp("invalid") / "broken")
    for case_id, (kind, _) in BROKEN.items():
        corrupt(root, case_id, kind)
    return root


def test_clean_dataset_has_no_problems(clean):
    report = check_cases(read_dataset(clean))
    assert report.ok and report.n_cases == len(CASES), report.table()


def test_every_corruption_is_reported_by_case(broken):
    report = check_cases(read_dataset(broken), workers=2)
    found = {(p.case_id, p.kind) for p in report.problems}
    for case_id, (_, kind) in BROKEN.items():
        assert (case_id, kind) in found, (case_id, kind, report.table())
    assert set(report.bad_case_ids) == set(BROKEN)  # the good cases are not accused
    table = report.table()
    for case_id in BROKEN:
        assert case_id in table
    detail = {p.case_id: p.detail for p in report.problems}
    assert "[9]" in detail["case_006"] and "0..3" in detail["case_006"]
    assert "case_003_0000.nii.gz" in detail["case_003"]


def test_headers_only_finds_truncation_without_reading_voxels(broken):
    report = check_cases(read_dataset(broken), deep=False)
    kinds = {p.case_id: p.kind for p in report.problems}
    assert kinds["case_001"] == "truncated"
    for case_id in ("case_002", "case_003", "case_004", "case_005", "case_009"):
        assert case_id in kinds
    for voxel_only in ("case_006", "case_007", "case_008"):  # these need the voxels
        assert voxel_only not in kinds


def test_duplicate_ids_and_masks(clean, tmp_path):
    path = make_csv(tmp_path / "list", clean, duplicate="twin")
    report = check_cases(read_dataset(path, classes=["liver", "spleen", "kidney_left"]))
    dupes = [p for p in report.problems if p.kind == "duplicate id"]
    assert {p.case_id for p in dupes} == {"twin"} and len(dupes) == 3  # every copy is named

    ts = make_totalsegmentator(tmp_path / "ts")
    (ts / "s0002" / "segmentations" / "spleen.nii.gz").unlink()
    report = check_cases(read_dataset(ts, classes="liver,spleen"))
    assert [(p.case_id, p.kind) for p in report.problems] == [("s0002", "missing file")]
    assert "spleen.nii.gz" in report.problems[0].detail
    # a structure absent from a subject's field of view: an empty label once it alone is selected
    import nibabel as nib
    import numpy as np

    mask = ts / "s0003" / "segmentations" / "aorta.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(nib.load(str(mask)).shape, np.uint8), nib.load(str(mask)).affine), str(mask))
    report = check_cases(read_dataset(ts, classes=["aorta"]))
    assert [(p.case_id, p.kind) for p in report.problems] == [("s0003", "empty label")]
    assert check_cases(read_dataset(ts, classes=["aorta"]), allow_empty=True).ok


def test_check_results_are_cached_until_a_file_changes(clean, broken, tmp_path):
    root = copy_tree(broken, tmp_path / "copy")
    cache = PreprocessCache(tmp_path / "cache")
    cl = read_dataset(root)
    first = check_cases(cl, cache=cache)
    second = check_cases(cl, cache=cache)
    assert first.cached == 0 and second.cached == len(cl.cases)
    assert [p.to_dict() for p in second.problems] == [p.to_dict() for p in first.problems]
    # repairing a case (case_008: empty label) invalidates its entry only
    label = root / "labelsTr" / "case_008.nii.gz"
    label.write_bytes((clean / "labelsTr" / "case_008.nii.gz").read_bytes())
    third = check_cases(cl, cache=cache)
    assert third.cached == len(cl.cases) - 1 and "case_008" not in third.bad_case_ids
    assert set(third.bad_case_ids) == set(BROKEN) - {"case_008"}


def test_check_data_command(clean, broken, tmp_path, capsys):
    assert main(["check-data", "--data", str(clean), "--no-cache", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "12 cases" in out and "no problems" in out
    report = tmp_path / "problems.csv"
    assert main(["check-data", "--data", str(broken), "--cache-dir", str(tmp_path / "c"), "--no-progress",
                 "--report", str(report)]) == 1
    out = capsys.readouterr().out
    for case_id, (_, kind) in BROKEN.items():
        assert any(case_id in line and kind in line for line in out.splitlines()), (case_id, out)
    import csv

    rows = list(csv.DictReader(report.read_text().splitlines()))
    assert {r["case_id"] for r in rows} == set(BROKEN) and {"case_id", "kind", "detail"} == set(rows[0])
    # bad input: one-line error
    assert main(["check-data", "--data", str(broken), "--format", "amos", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "training" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_train_refuses_or_skips_bad_cases(broken, tmp_path, capsys):
    config = tiny_config(epochs=1).to_dict()
    config["data"].pop("class_names")
    config["model"]["unet"].pop("num_classes")
    config["data"].update(spacing=[12.0, 12.0, 12.0], patch_size=[8, 8, 8])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    args = ["train", "--data", str(broken), "--config", str(tmp_path / "c.yaml"), "--cache-dir",
            str(tmp_path / "cache"), "--no-progress", "--classes", "liver,spleen"]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 1
    err = capsys.readouterr().err
    assert "refusing" in err and "case_004" in err
    assert not (tmp_path / "refused" / rundir.CONFIG_FILE).exists()

    assert main([*args, "--out", str(tmp_path / "run"), "--skip-bad-cases"]) == 0
    _, case_ids, doc = rundir.read_run_config(tmp_path / "run")
    assert case_ids == [c for c, _, _ in CASES if c not in BROKEN]
    source = doc["data_source"]
    assert source["format"] == "nnunet" and source["classes"] == [["liver", "liver"], ["spleen", "spleen"]]
    assert sorted(source["excluded"]) == sorted(BROKEN)
    assert list(case_list_from_source(source).case_ids) == case_ids
    assert doc["config"]["data"]["class_names"] == ["background", "liver", "spleen"]
    skipped = (tmp_path / "run" / "skipped_cases.csv").read_text()
    assert all(case_id in skipped for case_id in BROKEN)
    # the same command resumes (same checks, same exclusions)
    assert main([*args, "--out", str(tmp_path / "run"), "--skip-bad-cases", "--epochs", "2"]) == 0
    assert json.loads((tmp_path / "run" / rundir.CONFIG_FILE).read_text())["case_ids"] == case_ids
