"""Class selection: one rule for check-data and train (two classes never share a name; a
selected class that no annotation holds is a dataset problem that stops training)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from conftest import tiny_config, write_sphere_dataset
from HyperSORTLib.cli import main
from HyperSORTLib.data import read_dataset
from HyperSORTLib.data.validation import DATASET_ID, check_cases


@pytest.fixture
def spheres(tmp_path) -> Path:
    """Spheres of ball_a (1) and ball_b (2); dataset.json also declares ball_c (3), which no label holds."""
    root = write_sphere_dataset(tmp_path / "spheres", n_cases=4)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"]["ball_c"] = 3
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _config(tmp_path: Path) -> Path:
    config = tiny_config(epochs=1).to_dict()
    config["data"].pop("class_names")
    config["model"]["unet"].pop("num_classes")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("classes", ["ball_a=x,ball_b=x", "ball_a=Kidney,ball_b=kidney", "1=x,2=x",
                                     "ball_a=ball_b,ball_b"])
@pytest.mark.parametrize("command", ["check-data", "train"])
def test_two_classes_renamed_to_one_name_are_refused(spheres, tmp_path, capsys, classes, command):
    extra = ["--out", str(tmp_path / "run"), "--config", str(_config(tmp_path))] if command == "train" else []
    assert main([command, "--data", str(spheres), "--classes", classes, "--no-cache", "--no-progress",
                 *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hypersort {command}: error: Class selection: the names")
    assert "more than one class" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_library_applies_the_same_rule_to_every_selection_form(spheres):
    for classes in ({"ball_a": "x", "ball_b": "x"}, [("ball_a", "x"), ("ball_b", "x")], "ball_a=x,ball_b=x"):
        with pytest.raises(ValueError, match="more than one class"):
            read_dataset(spheres, classes=classes)


def test_a_selected_class_in_no_annotation_is_a_dataset_problem(spheres, capsys):
    report = check_cases(read_dataset(spheres, classes="ball_a,ball_c"), workers=1)
    (problem,) = report.problems
    assert problem.case_id == DATASET_ID and problem.kind == "absent class" and "'ball_c'" in problem.detail
    assert report.bad_case_ids == () and not report.ok
    assert check_cases(read_dataset(spheres, classes="ball_a,ball_b"), workers=1).ok
    assert main(["check-data", "--data", str(spheres), "--classes", "ball_a,ball_c", "--no-cache",
                 "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "absent class" in out and "ball_c" in out


def test_headers_only_check_cannot_tell_and_does_not_report_it(spheres):
    assert check_cases(read_dataset(spheres, classes="ball_a,ball_c"), deep=False, workers=1).ok


@pytest.mark.parametrize("extra", [[], ["--skip-bad-cases"], ["--allow-empty-labels"]])
def test_train_refuses_a_class_that_no_annotation_holds(spheres, tmp_path, capsys, extra):
    assert main(["train", "--data", str(spheres), "--classes", "ball_a,ball_c", "--config", str(_config(tmp_path)),
                 "--out", str(tmp_path / "run"), "--no-cache", "--no-progress", *extra]) == 1
    err = capsys.readouterr().err
    assert "refusing to train" in err and "'ball_c'" in err
    assert not (tmp_path / "run" / "config.json").exists()


def test_allow_empty_labels_still_trains_with_one_empty_label(spheres, tmp_path):
    label = spheres / "labelsTr" / "case_001.nii.gz"
    image = nib.load(str(label))
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), label)
    args = ["--data", str(spheres), "--classes", "ball_a,ball_b", "--no-cache", "--no-progress"]
    assert main(["check-data", *args]) == 1
    assert main(["check-data", *args, "--allow-empty-labels"]) == 0
    assert main(["train", *args, "--allow-empty-labels", "--config", str(_config(tmp_path)),
                 "--out", str(tmp_path / "run")]) == 0
    assert "case_001" in json.loads((tmp_path / "run" / "config.json").read_text())["case_ids"]
