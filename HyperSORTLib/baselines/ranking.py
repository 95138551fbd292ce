"""Peer rankings of erroneous cases: cleanlab's label-quality score on out-of-fold predictions,
and the small-loss ranking.

* :func:`kfold_splits` assigns every case to exactly one held-out fold, so
  :func:`out_of_fold_probabilities` scores each case with a plain UNet that never saw it
  (in-sample predictions fit the given labels, and every label would look right).
* :func:`cleanlab_scores` calls ``cleanlab.segmentation.rank.get_label_quality_scores``
  (``method="softmin"``) one case at a time, each 3-D volume reshaped to cleanlab's 2-D
  interface as one ``X x (Y*Z)`` image (the soft minimum pools over all voxels, so the
  reshape does not change the score). cleanlab is AGPL-3.0 and optional
  (``pip install hypersort[benchmark]``); it is imported only here, when called.
* :func:`small_loss_scores` reads the per-case training loss a plain UNet run recorded: cases
  whose labels the network cannot fit are suspicious.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from HyperSORTLib import rundir
from HyperSORTLib.baselines.config import BaselineConfig
from HyperSORTLib.baselines.trainer import BaselineTrainer
from HyperSORTLib.config import RunConfig
from HyperSORTLib.inference.decode import TrainedRun

CLEANLAB_MISSING = ("cleanlab is not installed; the cleanlab ranking is an optional extra (AGPL-3.0): "
                    "pip install 'hypersort[benchmark]' or pip install cleanlab")


def kfold_splits(n_cases: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` pairs ``(train_rows, held_out_rows)``; the held-out folds partition ``0..n_cases-1``.

    Raises:
        ValueError: ``k`` is below 2 or above ``n_cases``.
    """
    if not 2 <= k <= n_cases:
        raise ValueError(f"K-fold needs 2 <= k <= the number of cases ({n_cases}), found k={k}.")
    order = np.random.default_rng(seed).permutation(n_cases)
    folds = np.array_split(order, k)
    return [(np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i])), np.sort(fold))
            for i, fold in enumerate(folds)]


class CaseSubset(Dataset):
    """The cases ``rows`` of a dataset, re-indexed ``0..len(rows)-1`` (items' ``index`` too).

    Keeps the parent's epoch-keyed patch placement and, when it has one, its case list
    (restricted to the subset) so a run on the subset records the subset's fingerprint.
    """

    def __init__(self, dataset: Dataset, rows: Sequence[int]) -> None:
        self.dataset, self.rows = dataset, [int(r) for r in rows]
        self.accepts_epoch_keys = getattr(dataset, "accepts_epoch_keys", False)
        parent = getattr(dataset, "case_list", None)
        if parent is not None:
            keep = {parent.cases[r].case_id for r in self.rows}
            self.case_list = parent.without([c for c in parent.case_ids if c not in keep])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> dict:
        if isinstance(key, (tuple, list)):
            item = self.dataset[(self.rows[int(key[0])], *key[1:])]
            index = int(key[0])
        else:
            item = self.dataset[self.rows[int(key)]]
            index = int(key)
        return {**item, "index": index}


def _whole_volume(dataset: Dataset, row: int) -> tuple[np.ndarray, np.ndarray]:
    volume = dataset.volume(row)
    return np.asarray(volume.image, dtype=np.float32), np.asarray(volume.label)


def predict_probabilities(run: TrainedRun, image: np.ndarray) -> np.ndarray:
    """Softmax probabilities [K, X, Y, Z] of a run's (main-mode) UNet on a preprocessed volume."""
    unet = run.decode(run.latents.mean(0))  # a baseline's one UNet; HyperSORT's mean latent
    logits = run.predict_logits(torch.as_tensor(image)[None, None], unet)
    return torch.softmax(logits[0].float(), dim=0).cpu().numpy()


def out_of_fold_probabilities(config: RunConfig, dataset: Dataset, case_ids: Sequence[str], out_dir: str | Path,
                              k: int = 5, progress: bool = False) -> tuple[list[np.ndarray], list[float]]:
    """Train ``k`` plain UNets (``out_dir/fold_<i>``, resumable) and predict each held-out case.

    Args:
        dataset: a :class:`~HyperSORTLib.data.dataset.PreprocessedCases` (whole volumes are read
            through its ``volume``).

    Returns:
        ``(probabilities, seconds)``: per case (in ``case_ids`` order) its out-of-fold softmax
        [K, X, Y, Z], and per fold its training time in seconds.
    """
    probabilities: list[np.ndarray | None] = [None] * len(case_ids)
    seconds = []
    for i, (train_rows, held_rows) in enumerate(kfold_splits(len(case_ids), k, config.train.seed)):
        run_dir = Path(out_dir) / f"fold_{i}"
        subset = CaseSubset(dataset, train_rows)
        result = BaselineTrainer(config, subset, [case_ids[r] for r in train_rows], run_dir,
                                 BaselineConfig("unet"), progress=progress).fit()
        seconds.append(float(sum(h["seconds"] for h in result.history)))
        run = TrainedRun.load(run_dir, device=config.train.device)
        for row in held_rows:
            probabilities[row] = predict_probabilities(run, _whole_volume(dataset, row)[0])
    return [p for p in probabilities if p is not None], seconds


def cleanlab_scores(labels: Sequence[np.ndarray], probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """cleanlab's ``softmin`` label-quality score per case (lower: the label is less likely right).

    Args:
        labels: per case a label map [X, Y, Z] of class ids.
        probabilities: per case out-of-sample probabilities [K, X, Y, Z].

    Raises:
        ImportError: cleanlab is not installed (it is an optional extra).
        ValueError: a label and its probabilities do not match in shape.
    """
    try:
        from cleanlab.segmentation.rank import get_label_quality_scores
    except ImportError as exc:
        raise ImportError(CLEANLAB_MISSING) from exc
    if len(labels) != len(probabilities):
        raise ValueError(f"{len(labels)} label maps for {len(probabilities)} probability maps.")
    scores = np.empty(len(labels))
    for i, (label, probs) in enumerate(zip(labels, probabilities)):
        label, probs = np.asarray(label), np.asarray(probs, dtype=np.float64)
        if label.ndim != 3 or probs.shape[1:] != label.shape:
            raise ValueError(f"case {i}: expected a label [X, Y, Z] and probabilities [K, X, Y, Z] of the same grid, "
                             f"found {label.shape} and {probs.shape}.")
        x, y, z = label.shape
        image_scores, _ = get_label_quality_scores(label.reshape(1, x, y * z).astype(np.int64),
                                                   probs.reshape(1, probs.shape[0], x, y * z),
                                                   method="softmin", verbose=False)
        scores[i] = float(image_scores[0])
    return scores


def small_loss_scores(run_dir: str | Path) -> tuple[list[str], np.ndarray]:
    """Case ids and the last training loss per case of a run (higher: more suspicious)."""
    _, case_ids, _ = rundir.read_run_config(run_dir)
    _, losses = rundir.read_latents_table(run_dir, case_ids)
    return case_ids, losses
