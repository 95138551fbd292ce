"""``hypersort compare``: two audited trainings of one dataset, side by side, and the inputs it refuses."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from conftest import tiny_config, write_sphere_dataset
from HyperSORTLib.analysis import analyze_run
from HyperSORTLib.analysis.compare import compare_runs
from HyperSORTLib.cli import main
from HyperSORTLib.data import SegmentationCases, read_nnunet_folder, training_transforms
from HyperSORTLib.training import Trainer


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same 8 sphere cases trained twice (seeds 0 and 1, 3 epochs each) and audited."""
    root = tmp_path_factory.mktemp("compare")
    data = write_sphere_dataset(root / "data", n_cases=8)
    cases = read_nnunet_folder(data)
    runs = []
    for seed in (0, 1):
        config = tiny_config(epochs=3, seed=seed)
        run = root / f"run_{seed}"
        Trainer(config, SegmentationCases(cases, training_transforms(config.data)), cases.case_ids, run,
                progress=False, data_source={"path": str(data), "format": "nnunet"}).fit()
        analyze_run(run, device="cpu", use_cache=False)
        runs.append(run)
    return runs[0], runs[1]


def _samples(run: Path) -> tuple[list[str], np.ndarray]:
    with open(run / "analysis" / "samples.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["case_id"] for r in rows], np.array([int(r["cluster"]) for r in rows])


def _pairwise_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The agreement written out pair by pair, independently of the library."""
    n = len(a)
    return np.array([sum((a[i] == a[j]) == (b[i] == b[j]) for j in range(n) if j != i) / (n - 1)
                     for i in range(n)])


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_two_trainings_compared_case_by_case(two_runs, tmp_path, capsys):
    first, second = two_runs
    out = tmp_path / "cmp"
    assert main(["compare", "--runs", str(first), str(second), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    ids, a = _samples(first)
    ids_b, b = _samples(second)
    b = b[[ids_b.index(c) for c in ids]]
    expected_ari = adjusted_rand_score(a, b)
    assert f"{expected_ari:5.3f}" in printed
    with open(out / "style_agreement.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == ids
    np.testing.assert_allclose([float(r["agreement"]) for r in rows], _pairwise_agreement(a, b), atol=1e-4)
    with open(first / "analysis" / "clusters.csv", newline="", encoding="utf-8") as handle:
        kinds = {int(r["cluster"]): r["kind"] for r in csv.DictReader(handle)}
    assert all(r["style_run1"].startswith(kinds[int(c)]) for r, c in zip(rows, a))
    doc = json.loads((out / "style_agreement.json").read_text())
    assert doc["ari"][0][1] == doc["ari"][1][0] == pytest.approx(expected_ari, abs=1e-6)
    assert [r["run"] for r in doc["runs"]] == [str(first), str(second)]
    agreement = _pairwise_agreement(a, b)
    assert doc["unsettled_below"] == 0.9
    assert set(doc["unsettled_cases"]) == {c for c, v in zip(ids, agreement) if v < 0.9 - 1e-9}
    # the command's own files are replaced by a second comparison without --overwrite
    assert main(["compare", "--runs", str(second), str(first), "--out", str(out)]) == 0


def test_a_copy_agrees_fully_and_a_moved_case_is_named(two_runs, tmp_path, capsys):
    first = two_runs[0]
    same = compare_runs([first, _copy(first, tmp_path / "copy")])
    assert same.ari[0, 1] == pytest.approx(1.0) and np.all(same.agreement == 1.0) and not same.unsettled()

    moved = _copy(first, tmp_path / "moved")
    path = moved / "analysis" / "samples.csv"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    column = rows[0].index("cluster")
    labels = [int(r[column]) for r in rows[1:]]
    target = next(i for i in range(len(labels)) if labels.count(labels[i]) > 1)  # a case with company
    rows[1 + target][column] = str(max(labels) + 1)  # alone now
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    result = compare_runs([first, moved])
    assert result.unsettled(below=1.0)[0] == target
    assert result.agreement[target] == pytest.approx(1 - (labels.count(labels[target]) - 1) / (len(labels) - 1))
    assert main(["compare", "--runs", str(first), str(moved), "--below", "1"]) == 0
    assert result.case_ids[target] in capsys.readouterr().out


def test_inputs_that_cannot_be_compared_are_refused(two_runs, tmp_path):
    first, second = two_runs
    with pytest.raises(ValueError, match="at least two runs"):
        compare_runs([first])
    link = tmp_path / "link"
    link.symlink_to(first, target_is_directory=True)
    with pytest.raises(ValueError, match="are the same run"):
        compare_runs([first, link])

    with pytest.raises(ValueError, match="not a HyperSORT run directory"):
        compare_runs([first, tmp_path / "typo"])

    bare = _copy(first, tmp_path / "bare")
    shutil.rmtree(bare / "analysis")
    with pytest.raises(ValueError, match=r"no audit .*hypersort analyze --run"):
        compare_runs([first, bare])

    stale = _copy(first, tmp_path / "stale")
    provenance = stale / "analysis" / "provenance.json"
    doc = json.loads(provenance.read_text())
    provenance.write_text(json.dumps({**doc, "weights_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="re-run `hypersort analyze"):
        compare_runs([first, stale])

    fewer = _copy(second, tmp_path / "fewer")
    path = fewer / "analysis" / "samples.csv"
    lines = path.read_text().splitlines()
    gone = lines[-1].split(",")[0]
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=rf"other cases .*missing \['{gone}'\]"):
        compare_runs([first, fewer])

    other_data = _copy(second, tmp_path / "other_data")
    config_path = other_data / "config.json"
    config = json.loads(config_path.read_text())
    case = sorted(config["data_fingerprint"])[0]
    config["data_fingerprint"][case]["labels"][0]["sha256"] = "f" * 64
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"different files under the same case ids \({case}: label"):
        compare_runs([first, other_data])


def test_an_output_folder_with_foreign_files_is_refused(two_runs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "style_agreement.csv").write_text("mine\n")
    with pytest.raises(ValueError, match="--overwrite"):
        compare_runs(list(two_runs), out_dir=out)
    assert (out / "style_agreement.csv").read_text() == "mine\n"
    compare_runs(list(two_runs), out_dir=out, overwrite=True)
    assert (out / "style_agreement.csv").read_text().startswith("case_id,style_run1,style_run2,agreement")
