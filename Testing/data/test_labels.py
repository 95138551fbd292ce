"""Arg-max of class scores: the fast forms give ``argmax``'s labels, ties to the first class."""

from __future__ import annotations

import numpy as np
import torch

from HyperSORTLib.data.labels import argmax_classes, argmax_labels


def _scores(num_classes: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(num_classes, 9, 7, 5)).astype(np.float32)
    scores[-1, :3] = scores[0, :3]  # exact ties between the first and the last class
    scores[:, 4] = 0.5  # every class tied
    return scores


def test_argmax_classes_equals_numpy_argmax_with_ties_to_the_first_class():
    for num_classes in (2, 5, 300):
        scores = _scores(num_classes)
        labels = argmax_classes(scores)
        np.testing.assert_array_equal(labels, scores.argmax(0))
        assert labels.dtype == (np.uint8 if num_classes <= 256 else np.uint16)
    assert (argmax_classes(_scores(5))[4] == 0).all()


def test_argmax_labels_equals_torch_argmax_on_any_axis():
    scores = _scores(5)
    for axis in (0, 1):
        tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(scores, 0, axis)))
        labels = argmax_labels(tensor, axis=axis)
        np.testing.assert_array_equal(labels, tensor.argmax(axis).numpy())
        assert labels.dtype == np.uint8
