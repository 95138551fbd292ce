"""``evaluate_dataset``: the paper's protocol on a tiny clean dataset, its scores and its checks.

The end-to-end run trains for 3 epochs (wiring and resumption, not quality); the style checks
and HD95 are checked on constructed inputs whose answers are known.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance

from conftest import tiny_config, write_sphere_dataset
from data_helpers import Killed, kill_after
from HyperSORTLib.analysis.behaviour import compare_to_reference
from HyperSORTLib.analysis.evaluation import (EVALUATION_FILE, PERTURBED_DIR, RUN_DIR, STATE_FILE,
                                              check_evaluation_output, check_styles, clear_evaluation_output,
                                              evaluate_dataset, hd95_per_class)
from HyperSORTLib.data import read_dataset
from HyperSORTLib.data.manifest import ManifestRow, read_manifest, write_manifest

CLASSES = ("background", "ball_a", "ball_b")
PLAN = """seed: 0
groups:
  - name: a_dilated
    count: 3
    perturbations:
      - dilate_class: {class_id: ball_a, mm: 2}
  - name: b_missing
    count: 3
    perturbations:
      - omit_class: {class_id: ball_b}
  - name: erroneous
    count: 1
    erroneous: true
    perturbations:
      - translate_label: {distance_mm: 10}
"""


# --------------------------------------------------------------------------- HD95
def test_hd95_of_two_parallel_sheets_is_their_distance_in_mm():
    # One-voxel-thick sheets: every voxel is an edge voxel, and each one's nearest voxel of the
    # other sheet is straight across, 3 voxels away along axis 0.
    truth = np.zeros((12, 10, 10), np.uint8)
    pred = np.zeros_like(truth)
    truth[3, 2:8, 2:8] = 1
    pred[6, 2:8, 2:8] = 1
    assert hd95_per_class(truth, pred, [1], (1.5, 1.0, 1.0)) == {1: pytest.approx(4.5)}
    assert hd95_per_class(truth, pred, [1], (1.0, 2.0, 2.0)) == {1: pytest.approx(3.0)}  # spacing per axis


def test_hd95_of_single_voxels_conventions_for_empty_classes():
    truth = np.zeros((10, 10, 10), np.int16)
    pred = np.zeros_like(truth)
    truth[5, 5, 5], pred[5, 5, 8] = 1, 1  # class 1: 3 voxels apart along axis 2 (2 mm voxels)
    truth[1:3, 1:3, 1:3] = 2
    pred[1:3, 1:3, 1:3] = 2  # class 2: identical
    pred[8, 8, 0] = 3  # class 3: only in the prediction
    found = hd95_per_class(truth, pred, [1, 2, 3, 4], (1.0, 1.0, 2.0))
    assert found == {1: pytest.approx(6.0), 2: 0.0, 3: math.inf, 4: 0.0}
    with pytest.raises(ValueError, match="spacing must be 3 positive numbers"):
        hd95_per_class(truth, pred, [1], (1.0, 1.0))
    with pytest.raises(ValueError, match="differ in shape"):
        hd95_per_class(truth, pred[:-1], [1], (1.0, 1.0, 1.0))


# --------------------------------------------------------------------------- style checks
def _maps(a_extent: int = 8, b_present: bool = True, swap: bool = False) -> np.ndarray:
    """A probe segmentation: ball_a an ``a_extent`` x 8 x 8 block, ball_b an 8 x 8 x 8 block."""
    label = np.zeros((24, 24, 12), np.uint8)
    label[2:2 + a_extent, 2:10, 2:10] = 2 if swap else 1
    if b_present:
        label[14:22, 14:22, 2:10] = 1 if swap else 2
    return label


def _constructed_case(tmp_path: Path):
    """Rows (styles) with known behaviour and a manifest whose groups they hold."""
    reference = _maps()
    outputs = {0: reference,                 # style 0, the main mode
               1: _maps(a_extent=10),        # ball_a x1.25: reproduces a 24% dilation
               2: _maps(a_extent=9),         # ball_a x1.125: not the injected x1.40
               3: _maps(b_present=False),    # ball_b missing
               4: reference,                 # segments like the main mode, though not in it
               5: _maps(swap=True)}          # ball_a and ball_b swapped
    behaviours = {r: compare_to_reference([reference], [m], [0.001], CLASSES) for r, m in outputs.items()}
    groups = [  # group, perturbation, params, volume change of ball_a, rows of its cases
        ("clean", "none", {}, 0.0, [0, 0, 0, 0, 1]),
        ("a_dilated", "dilate_class", {"class_id": "ball_a", "mm": 3.0}, 0.24, [1, 1, 1, 0]),
        ("a_dilated_more", "dilate_class", {"class_id": "ball_a", "mm": 5.0}, 0.40, [2, 2, 2]),
        ("b_missing", "omit_class", {"class_id": "ball_b"}, 0.0, [3, 3, 3]),
        ("b_missing_not_learnt", "omit_class", {"class_id": "ball_b"}, 0.0, [4, 4, 4]),
        ("swapped", "swap_classes", {"a": "ball_a", "b": "ball_b"}, 0.0, [5, 5, 5]),
        ("a_in_main_mode", "dilate_class", {"class_id": "ball_a", "mm": 1.0}, 0.05, [0, 0, 0, 5]),
        ("shifted", "shift_class", {"class_id": "ball_a", "shift_mm": [0, 0, 4]}, 0.0, [1, 1, 1]),
        ("errors", "empty_label", {}, -1.0, [2]),
    ]
    manifest_rows, rows = [], []
    for group, name, params, change, group_rows in groups:
        for n, row in enumerate(group_rows):
            manifest_rows.append(ManifestRow(f"{group}_{n}", group, group == "errors", name, params,
                                             {1: 1.0, 2: 1.0}, {1: change, 2: 0.0}))
            rows.append(row)
    # one case of a_dilated drew another parameter: the checks use the group's mean volume change
    manifest_rows[6] = ManifestRow("a_dilated_1", "a_dilated", False, "dilate_class",
                                   {"class_id": "ball_a", "mm": 3.5}, {1: 1.0}, {1: 0.26})
    path = write_manifest(tmp_path / "manifest.csv", manifest_rows, CLASSES)
    names = [f"style {r}" + (" (main mode)" if r == 0 else "") for r in range(6)]
    return read_manifest(path), np.array(rows), names, behaviours


def test_style_checks_on_constructed_styles(tmp_path):
    manifest, rows, names, behaviours = _constructed_case(tmp_path)
    checks = {c.group: c for c in check_styles(manifest, rows, names, 0, behaviours)}
    assert "errors" not in checks  # individual errors are scored by the detection metrics
    assert checks["clean"].passed is True and checks["clean"].row == 0 and checks["clean"].row_cases == 4

    dilated = checks["a_dilated"]  # x1.25 found for x1.25 injected (mean of 0.24, 0.26, 0.24, 0.24)
    assert (dilated.passed, dilated.row, dilated.row_cases, dilated.n_cases) == (True, 1, 3, 4)
    assert dilated.injected_ratio == pytest.approx(1.245) and dilated.found_ratio == pytest.approx(1.25)
    assert (dilated.expected, dilated.found, dilated.check) == ("x1.25", "x1.25", "ball_a volume ratio")

    weak = checks["a_dilated_more"]  # x1.125 found for x1.40 injected: 20% off
    assert weak.passed is False and weak.found_ratio == pytest.approx(1.125)
    assert "20% off the injected ratio (tolerance 10%)" in weak.detail
    # a looser tolerance accepts it
    loose = {c.group: c for c in check_styles(manifest, rows, names, 0, behaviours, tolerance=0.25)}
    assert loose["a_dilated_more"].passed is True

    assert checks["b_missing"].passed is True and checks["b_missing"].found == "missing"
    kept = checks["b_missing_not_learnt"]
    assert kept.passed is False and kept.found.startswith("present") and kept.detail == "ball_b is not missing"
    assert checks["swapped"].passed is True and checks["swapped"].check == "ball_a and ball_b swapped"

    in_main = checks["a_in_main_mode"]  # x1.00 would be within 10% of x1.05, but the bias was not separated
    assert in_main.passed is False and in_main.row == 0 and "not separated" in in_main.detail
    assert checks["shifted"].passed is None and "no rule checks shift_class" in checks["shifted"].detail


def test_style_checks_fail_when_the_clean_group_is_not_the_main_mode_and_report_mixed_groups(tmp_path):
    manifest, rows, names, behaviours = _constructed_case(tmp_path)
    rows = rows.copy()
    rows[:5] = 4  # the clean cases sit in style 4, not in the main mode
    checks = {c.group: c for c in check_styles(manifest, rows, names, 0, behaviours)}
    assert checks["clean"].passed is False and checks["clean"].found == "style 4"
    mixed_rows = [ManifestRow("m0", "mixed", False, "omit_class", {"class_id": "ball_b"}),
                  ManifestRow("m1", "mixed", False, "dilate_class", {"class_id": "ball_a", "mm": 2.0})]
    mixed = read_manifest(write_manifest(tmp_path / "mixed.csv", mixed_rows, CLASSES))
    (check,) = check_styles(mixed, np.array([3, 3]), names, 0, behaviours)
    assert check.passed is None and check.perturbation == "mixed"
    with pytest.raises(ValueError, match="2 row labels for the 29 cases"):
        check_styles(manifest, np.array([0, 1]), names, 0, behaviours)


# --------------------------------------------------------------------------- end to end
def _logged_epochs(out: Path) -> list[int]:
    with open(out / RUN_DIR / "train_log.csv", newline="") as handle:
        return [int(float(row["epoch"])) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict:
    """An evaluation of 10 sphere cases, killed after epoch 2 of 3 and run again to the end."""
    root = tmp_path_factory.mktemp("evaluate")
    source = write_sphere_dataset(root / "clean", n_cases=10)
    plan = root / "plan.yaml"
    plan.write_text(PLAN)
    out = root / "out"
    config = tiny_config(epochs=3, checkpoint_every=1)
    cases = read_dataset(source)
    with pytest.raises(Killed):
        evaluate_dataset(cases, plan, out, config, callbacks=[kill_after(2)])
    killed = {"evaluation": (out / EVALUATION_FILE).exists(), "epochs": _logged_epochs(out),
              "manifest": (out / PERTURBED_DIR / "manifest.csv").is_file()}
    result = evaluate_dataset(cases, plan, out, config)
    return {"root": root, "source": source, "plan": plan, "out": out, "config": config, "cases": cases,
            "killed": killed, "result": result}


@pytest.mark.slow
def test_a_killed_evaluation_resumes_training_where_it_stopped(evaluated):
    assert evaluated["killed"]["evaluation"] is False and evaluated["killed"]["manifest"] is True
    m = evaluated["result"].metrics
    assert m["resumed_from"] == 2 and m["epochs"] == 3 and m["resumed_folder"] is True
    assert m["perturbed_cases_reused"] == 10
    assert evaluated["killed"]["epochs"] == [1, 2]
    assert _logged_epochs(evaluated["out"]) == [1, 2, 3]


@pytest.mark.slow
def test_evaluation_json_holds_the_audit_scores_and_the_checks(evaluated):
    out, result = evaluated["out"], evaluated["result"]
    written = json.loads((out / EVALUATION_FILE).read_text())
    assert written == json.loads(json.dumps(result.metrics))
    audit = json.loads((out / RUN_DIR / "analysis" / "metrics.json").read_text())
    for key in ("ari", "nmi", "auroc", "average_precision", "precision_at_k", "k"):
        assert written[key] == audit[key], key
    assert written["group_sizes"] == {"a_dilated": 3, "b_missing": 3, "clean": 3, "erroneous": 1}
    # one check per systematic group, the erroneous case left to the detection scores
    checks = {c["group"]: c for c in written["styles"]}
    assert sorted(checks) == ["a_dilated", "b_missing", "clean"]
    clusters = {c["cluster"]: c for c in audit["clusters"]}
    manifest = read_manifest(out / PERTURBED_DIR / "manifest.csv")
    for group, check in checks.items():
        members = {c for c, g in zip([r["case_id"] for r in manifest.rows], manifest.groups) if g == group}
        held = members & set(clusters[check["row"]]["members"])
        assert check["row_cases"] == len(held) == max(len(members & set(c["members"])) for c in clusters.values())
    dilated = checks["a_dilated"]
    ball_a = next(c for c in clusters[dilated["row"]]["classes"] if c["name"] == "ball_a")
    if ball_a["volume_change"] is not None:
        assert dilated["found_ratio"] == pytest.approx(1 + ball_a["volume_change"], abs=1e-4)
    changes = [float(r["volume_change_ball_a"]) for r, g in zip(manifest.rows, manifest.groups) if g == "a_dilated"]
    assert dilated["injected_ratio"] == pytest.approx(1 + np.mean(changes))
    if dilated["row"] == written["main_mode"]["row"]:
        assert dilated["passed"] is False
    assert written["styles_checked"] == 3 and written["styles_passed"] == sum(c["passed"] for c in checks.values())
    text = result.summary()
    for group in checks:
        assert group in text
    assert f"{written['main_mode']['dice']:.3f}" in text and "HD95" in text


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notice inside get_mask_edges
def test_main_mode_is_scored_against_the_source_labels(evaluated):
    """Dice and HD95 recomputed from the source's label files and the decoded main-mode UNet."""
    from HyperSORTLib.analysis.inputs import training_patches
    from HyperSORTLib.inference import TrainedRun

    out, m = evaluated["out"], evaluated["result"].metrics
    run = TrainedRun.load(out / RUN_DIR, device="cpu")
    centre = np.asarray(evaluated["result"].analysis.clusters.centers[m["main_mode"]["row"]], np.float32)
    perturbed = read_dataset(out / PERTURBED_DIR)
    dice = {1: [], 2: []}
    hd95 = {1: [], 2: []}
    dice_perturbed = []
    for patch in training_patches(perturbed, run.config.data):
        pred = run.segment(patch.image, centre).astype(np.int64)
        clean = np.asarray(nib.load(evaluated["source"] / "labelsTr" / f"{patch.case_id}.nii.gz").dataobj)
        for k in (1, 2):
            t, p = clean == k, pred == k
            dice[k].append(2 * (t & p).sum() / (t.sum() + p.sum()) if t.sum() + p.sum() else 1.0)
            if t.any() and p.any():
                hd95[k].append(float(compute_hausdorff_distance(torch.from_numpy(p[None, None]),
                                                                torch.from_numpy(t[None, None]),
                                                                include_background=True, percentile=95,
                                                                spacing=(2.0, 2.0, 2.0))))
        t, p = patch.label == 1, pred == 1
        dice_perturbed.append(2 * (t & p).sum() / (t.sum() + p.sum()) if t.sum() + p.sum() else 1.0)
    main = m["main_mode"]
    assert main["n_cases"] == 10
    assert main["dice_per_class"]["ball_a"] == pytest.approx(np.mean(dice[1]))
    assert main["dice_per_class"]["ball_b"] == pytest.approx(np.mean(dice[2]))
    assert main["dice"] == pytest.approx((np.mean(dice[1]) + np.mean(dice[2])) / 2)
    for k, name in ((1, "ball_a"), (2, "ball_b")):
        expected = np.mean(hd95[k]) if hd95[k] else None
        assert main["hd95_per_class"][name] == (pytest.approx(expected) if expected is not None else None)
        assert main["hd95_undefined"][name] == 10 - len(hd95[k])
    # the perturbed labels (three dilated ball_a) would give another score: the truth is the source's
    assert main["dice_per_class"]["ball_a"] != pytest.approx(np.mean(dice_perturbed), abs=1e-9)


def test_a_folder_with_foreign_files_of_its_names_is_refused(tmp_path):
    source = write_sphere_dataset(tmp_path / "clean", n_cases=4)
    plan = tmp_path / "plan.yaml"
    plan.write_text("seed: 0\ngroups:\n  - name: a_dilated\n    count: 1\n    perturbations:\n"
                    "      - dilate_class: {class_id: ball_a, mm: 2}\n")
    out = tmp_path / "mine"
    (out / "run").mkdir(parents=True)
    (out / "run" / "notes.txt").write_text("my notes")
    (out / "keep.txt").write_text("kept")
    with pytest.raises(ValueError, match=r"--out .*mine holds run, not written by hypersort evaluate.*--overwrite"):
        evaluate_dataset(read_dataset(source), plan, out, tiny_config(epochs=1))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "run"]
    assert (out / "run" / "notes.txt").read_text() == "my notes"
    # with overwrite the folder is accepted (nothing removed by the check); then only the
    # evaluation's names are cleared
    inputs = {"plan": {"seed": 0}}
    assert check_evaluation_output(out, inputs, overwrite=True) is False
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "run"]
    assert clear_evaluation_output(out) == ["run"]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.slow
def test_an_evaluation_of_other_inputs_is_refused(evaluated, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(PLAN.replace("mm: 2", "mm: 4"))
    before = (evaluated["out"] / EVALUATION_FILE).read_bytes()
    state = (evaluated["out"] / STATE_FILE).read_bytes()
    with pytest.raises(ValueError, match=r"holds an evaluation of other inputs \(plan differ\).*--overwrite"):
        evaluate_dataset(evaluated["cases"], other, evaluated["out"], evaluated["config"])
    assert (evaluated["out"] / EVALUATION_FILE).read_bytes() == before
    assert (evaluated["out"] / STATE_FILE).read_bytes() == state
