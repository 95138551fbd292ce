"""Peer rankings: the out-of-fold split, out-of-fold predictions, cleanlab's score, small loss."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import tiny_config
from HyperSORTLib import rundir
from HyperSORTLib.baselines import BaselineTrainer
from HyperSORTLib.baselines.ranking import (CaseSubset, cleanlab_scores, kfold_splits, out_of_fold_probabilities,
                                            small_loss_scores)
from HyperSORTLib.data import read_nnunet_folder
from HyperSORTLib.data.dataset import PreprocessedCases

needs_cleanlab = pytest.mark.skipif(importlib.util.find_spec("cleanlab") is None,
                                    reason="cleanlab (optional extra 'benchmark', AGPL-3.0) is not installed")


@pytest.mark.parametrize("n,k", [(6, 2), (7, 3), (5, 5)])
def test_kfold_held_out_folds_partition_the_cases(n, k):
    splits = kfold_splits(n, k, seed=3)
    held = np.concatenate([h for _, h in splits])
    assert sorted(held.tolist()) == list(range(n))
    for train, hold in splits:
        assert not set(train) & set(hold) and len(train) + len(hold) == n
    assert [h.tolist() for _, h in kfold_splits(n, k, seed=3)] == [h.tolist() for _, h in splits]


@pytest.mark.parametrize("k", [1, 7])
def test_kfold_rejects_impossible_fold_counts(k):
    with pytest.raises(ValueError, match="2 <= k <= the number of cases \\(6\\)"):
        kfold_splits(6, k)


def test_out_of_fold_models_never_see_the_cases_they_score(sphere_dataset, tmp_path):
    cases = read_nnunet_folder(sphere_dataset)
    config = tiny_config(epochs=2)
    dataset = PreprocessedCases(cases, config.data)
    probs, seconds = out_of_fold_probabilities(config, dataset, cases.case_ids, tmp_path / "oof", k=3)
    assert len(probs) == 6 and len(seconds) == 3
    for i, (train_rows, held_rows) in enumerate(kfold_splits(6, 3, config.train.seed)):
        _, trained_on, doc = rundir.read_run_config(tmp_path / "oof" / f"fold_{i}")
        assert trained_on == [cases.case_ids[r] for r in train_rows]
        assert not set(trained_on) & {cases.case_ids[r] for r in held_rows}
        assert set(doc["data_fingerprint"]) == set(trained_on)
    for p, row in zip(probs, range(6)):
        assert p.shape == (3, *dataset.volume(row).label.shape)
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)


def test_case_subset_reindexes_items(sphere_dataset):
    cases = read_nnunet_folder(sphere_dataset)
    dataset = PreprocessedCases(cases, tiny_config().data)
    subset = CaseSubset(dataset, [4, 1])
    assert len(subset) == 2 and subset[(0, 0, 0)]["case_id"] == "case_004" and subset[(0, 0, 0)]["index"] == 0
    assert subset.case_list.case_ids == ("case_001", "case_004")


def test_small_loss_reads_the_per_case_training_loss(sphere_dataset, tmp_path):
    cases = read_nnunet_folder(sphere_dataset)
    config = tiny_config(epochs=1)
    result = BaselineTrainer(config, PreprocessedCases(cases, config.data), cases.case_ids, tmp_path / "r",
                             progress=False).fit()
    ids, losses = small_loss_scores(tmp_path / "r")
    assert ids == list(cases.case_ids)
    np.testing.assert_allclose(losses, result.sample_loss.numpy(), rtol=1e-5)


def _probabilities_of(label: np.ndarray, k: int, confidence: float) -> np.ndarray:
    probs = np.full((k, *label.shape), (1 - confidence) / (k - 1))
    for c in range(k):
        probs[c][label == c] = confidence
    return probs


@needs_cleanlab
def test_cleanlab_scores_a_wrong_label_below_a_right_one():
    rng = np.random.default_rng(0)
    truth = [(rng.random((6, 5, 4)) > 0.7).astype(np.int64) for _ in range(3)]
    probs = [_probabilities_of(t, 2, 0.9) for t in truth]
    given = [t.copy() for t in truth]
    given[1][:3] = 1 - given[1][:3]  # half of case 1 mislabelled
    scores = cleanlab_scores(given, probs)
    assert scores.shape == (3,) and int(np.argmin(scores)) == 1
    assert scores[0] == pytest.approx(cleanlab_scores([truth[0]], [probs[0]])[0])


@needs_cleanlab
def test_cleanlab_scores_check_shapes():
    with pytest.raises(ValueError, match="case 0: expected a label"):
        cleanlab_scores([np.zeros((2, 2, 2), int)], [np.full((2, 3, 2, 2), 0.5)])


def test_missing_cleanlab_is_a_clear_import_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cleanlab(name, *args, **kwargs):
        if name.startswith("cleanlab"):
            raise ImportError("No module named 'cleanlab'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cleanlab)
    with pytest.raises(ImportError, match="optional extra \\(AGPL-3.0\\)"):
        cleanlab_scores([np.zeros((2, 2, 2), int)], [np.full((2, 2, 2, 2), 0.5)])


def test_the_library_never_imports_cleanlab_at_module_level():
    """cleanlab (AGPL-3.0) stays optional: imported inside the one function that uses it, nowhere else."""
    import ast
    from pathlib import Path

    import HyperSORTLib

    found = []
    for path in Path(HyperSORTLib.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "cleanlab" for n in names):
                found.append((path.name, id(node) in module_level))
    assert found == [("ranking.py", False)]
