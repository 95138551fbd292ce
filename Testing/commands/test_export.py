"""``hypersort export``: the case list without rejected cases, the re-annotation list, the dataset
layout; the source is never modified and outputs are never replaced without --overwrite."""

from __future__ import annotations

import csv
import json
import os

import pytest

from HyperSORTLib.analysis.review import ReviewSession, review_path
from HyperSORTLib.cli import main
from HyperSORTLib.data import read_dataset


def _reviewed(audited_run):
    run, dataset = audited_run
    session = ReviewSession(run, "dr.a")
    session.record("case_004", "wrong", note="ball_b missing")
    session.record("case_002", "style")
    session.record("case_005", "correct")
    return run, dataset


def _snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_export_lists_kept_cases_and_cases_to_reannotate(audited_run, tmp_path, capsys):
    run, dataset = _reviewed(audited_run)
    before = _snapshot(dataset)
    out = tmp_path / "export"
    assert main(["export", "--run", str(run), "--data", str(dataset), "--out", str(out)]) == 0
    kept = _rows(out / "cases.csv")
    assert [r["id"] for r in kept] == ["case_000", "case_001", "case_002", "case_003", "case_005"]
    assert kept[0]["image"] == str((dataset / "imagesTr" / "case_000_0000.nii.gz").resolve())
    again = read_dataset(out / "cases.csv", "csv", ["ball_a", "ball_b"])  # what train --data reads
    assert again.case_ids == ("case_000", "case_001", "case_002", "case_003", "case_005")
    redo = _rows(out / "reannotate.csv")
    assert [(r["case_id"], r["note"], r["reviewer"]) for r in redo] == [("case_004", "ball_b missing", "dr.a")]
    assert "Kept 5 cases" in capsys.readouterr().out
    assert _snapshot(dataset) == before


def test_dataset_export_keeps_the_layout_with_links_and_counts(audited_run, tmp_path):
    run, dataset = _reviewed(audited_run)
    before = _snapshot(dataset)
    out = tmp_path / "export"
    assert main(["export", "--run", str(run), "--review", str(review_path(run)), "--data", str(dataset), "--out", str(out),
                 "--layout", "dataset"]) == 0
    images = sorted(p.name for p in (out / "imagesTr").iterdir())
    assert images == [f"case_00{i}_0000.nii.gz" for i in (0, 1, 2, 3, 5)]
    assert os.path.islink(out / "labelsTr" / "case_000.nii.gz")
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 5
    assert read_dataset(out).case_ids == ("case_000", "case_001", "case_002", "case_003", "case_005")
    assert _snapshot(dataset) == before


def test_existing_outputs_are_kept_without_overwrite(audited_run, tmp_path, capsys):
    run, dataset = _reviewed(audited_run)
    out = tmp_path / "export"
    out.mkdir()
    (out / "cases.csv").write_text("mine\n")
    assert main(["export", "--run", str(run), "--data", str(dataset), "--out", str(out)]) == 2
    assert "holds cases.csv" in capsys.readouterr().err and (out / "cases.csv").read_text() == "mine\n"
    assert main(["export", "--run", str(run), "--data", str(dataset), "--out", str(out), "--overwrite"]) == 0
    assert (out / "cases.csv").read_text().startswith("id,image,label")


@pytest.mark.parametrize("inside", [True, False])
def test_out_overlapping_the_source_is_refused(audited_run, tmp_path, capsys, inside):
    run, dataset = _reviewed(audited_run)
    before = _snapshot(dataset)
    out = dataset / "reviewed" if inside else dataset.parent
    assert main(["export", "--run", str(run), "--data", str(dataset), "--out", str(out), "--overwrite"]) == 2
    assert "the source is never written" in capsys.readouterr().err
    assert _snapshot(dataset) == before


def test_export_without_a_review_says_so(audited_run, tmp_path, capsys):
    run, dataset = audited_run
    assert main(["export", "--run", str(run), "--data", str(dataset), "--out", str(tmp_path / "x")]) == 2
    assert "review.csv does not exist" in capsys.readouterr().err
