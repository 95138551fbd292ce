"""HyperSORTLib.metrics: the one per-class Dice and volume, checked against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from HyperSORTLib.metrics import (
    class_volumes_ml,
    confusion_matrix,
    dice_from_confusion,
    dice_per_class,
    label_overlap,
    volume_change,
)


def maps() -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((6, 5, 4), np.uint8)
    b = np.zeros_like(a)
    a[:3] = 1          # 60 voxels of class 1
    b[1:3] = 1         # 40 voxels, all inside a's class 1
    a[4, :, :2] = 2    # 10 voxels of class 2, gone in b
    b[5, :2, :2] = 3   # 4 voxels of class 3, absent from a
    return a, b


def test_dice_and_volumes_match_hand_counts():
    a, b = maps()
    dice = dice_per_class(a, b, (1, 2, 3, 4))
    assert dice[1] == pytest.approx(2 * 40 / (60 + 40))
    assert dice[2] == 0.0 and dice[3] == 0.0
    assert dice[4] == 1.0  # absent from both
    assert class_volumes_ml(a, (1, 2), (2.0, 1.0, 0.5)) == {1: pytest.approx(0.06), 2: pytest.approx(0.01)}
    change = volume_change(a, b, (1, 2, 3), (2.0, 1.0, 0.5))
    assert change[1] == pytest.approx(-1 / 3) and change[2] == -1.0 and math.isnan(change[3])


def test_one_pass_overlap_and_confusion_agree_with_the_per_class_functions():
    a, b = maps()
    dice, change = label_overlap(a, b, 4, (1.0, 1.0, 1.0))
    assert dice == dice_per_class(a, b, (1, 2, 3))
    expected = volume_change(a, b, (1, 2, 3), (1.0, 1.0, 1.0))
    assert all(change[c] == expected[c] or (math.isnan(change[c]) and math.isnan(expected[c])) for c in expected)
    table = confusion_matrix(a, b, 4)
    assert table.sum() == a.size and table[1, 1] == 40 and table[2, 0] == 10
    assert dice_from_confusion(table) == dice


@pytest.mark.parametrize("call, message", [
    (lambda a, b: dice_per_class(a, b[:2], (1,)), "same shape"),
    (lambda a, b: dice_per_class(a.astype(float), b, (1,)), "integer dtype"),
    (lambda a, b: volume_change(a, b, (1,), (0.0, 1.0, 1.0)), "spacing"),
    (lambda a, b: confusion_matrix(a, b, 3), "outside 0..2"),
])
def test_bad_inputs_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call(*maps())
