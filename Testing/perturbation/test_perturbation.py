"""Label-map perturbations: geometry in millimetres, exact class edits, determinism, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from HyperSORTLib.perturbation import (
    PERTURBATIONS,
    class_volumes_ml,
    dice_per_class,
    dilate_class,
    elastic_deform,
    merge_classes,
    omit_class,
    remove_slices,
    swap_classes,
    translate_label,
    volume_change,
)


def sphere(shape: tuple[int, int, int], spacing: tuple[float, float, float], radius_mm: float,
           class_id: int = 1) -> np.ndarray:
    """uint8 ball of ``radius_mm`` (voxel centres inside) at the centre of the grid."""
    centre = (np.asarray(shape) - 1) / 2.0
    grid = np.indices(shape, dtype=float)
    dist = np.sqrt(sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(3)))
    return np.where(dist <= radius_mm, class_id, 0).astype(np.uint8)


def radius_from_volume(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    volume = float(mask.sum()) * float(np.prod(spacing))
    return (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.0, 2.5)])
@pytest.mark.parametrize("margin_mm", [-4.0, 3.0, 5.0])
def test_dilate_moves_surface_by_margin_in_mm(spacing, margin_mm):
    radius = 12.0
    shape = tuple(int(2 * (radius + 8) / s) + 3 for s in spacing)
    label = sphere(shape, spacing, radius)
    before = radius_from_volume(label == 1, spacing)
    out = dilate_class(label, 1, margin_mm, spacing)
    after = radius_from_volume(out == 1, spacing)
    # Discretisation of the surface costs less than half of the coarsest voxel.
    assert after - before == pytest.approx(margin_mm, abs=0.5 * max(spacing))
    assert out.dtype == label.dtype and out.shape == label.shape
    assert set(np.unique(out)) <= {0, 1}


def test_dilate_along_axis_respects_anisotropic_spacing():
    label = np.zeros((21, 21, 21), np.uint8)
    label[10, 10, 10] = 1
    out = dilate_class(label, 1, 5.0, (1.0, 2.5, 5.0))
    # 5 mm reaches 5 voxels along i, 2 along j, 1 along k.
    assert out[15, 10, 10] == 1 and out[16, 10, 10] == 0
    assert out[10, 12, 10] == 1 and out[10, 13, 10] == 0
    assert out[10, 10, 11] == 1 and out[10, 10, 12] == 0


def test_dilate_only_overwrites_allowed_classes():
    label = np.zeros((20, 20, 20), np.uint8)
    label[5:10, 5:15, 5:15] = 1
    label[10:12, 5:15, 5:15] = 2  # a neighbour right against class 1
    label[0:5, 5:15, 5:15] = 3
    out = dilate_class(label, 1, 3.0, (1.0, 1.0, 1.0), overwrite=(0, 3))
    assert np.array_equal(out == 2, label == 2)  # protected neighbour untouched
    assert (out[2:5, 5:15, 5:15] == 1).all()  # class 3 may be overwritten
    assert (out == 1).sum() > (label == 1).sum()
    default = dilate_class(label, 1, 3.0, (1.0, 1.0, 1.0))
    assert np.array_equal(default == 3, label == 3)


def test_erosion_sets_background_and_keeps_other_classes():
    label = np.zeros((20, 20, 20), np.int16)
    label[4:16, 4:16, 4:16] = 2
    label[16:18, 4:16, 4:16] = 1
    out = dilate_class(label, 2, -2.0, (1.0, 1.0, 1.0))
    assert (out[6:14, 6:14, 6:14] == 2).all()
    assert (out[4:6, 4:16, 4:16] == 0).all()
    assert np.array_equal(out == 1, label == 1)
    assert out.dtype == np.int16


def test_dilate_absent_class_and_zero_margin_copy():
    label = sphere((10, 10, 10), (1.0, 1.0, 1.0), 3.0)
    for out in (dilate_class(label, 4, 3.0, (1, 1, 1)), dilate_class(label, 1, 0.0, (1, 1, 1))):
        assert np.array_equal(out, label) and out is not label


def test_inputs_are_never_modified():
    label = sphere((16, 16, 16), (1.0, 1.0, 1.0), 5.0)
    label[0, 0, 0] = 2
    original = label.copy()
    dilate_class(label, 1, 2.0, (1, 1, 1))
    dilate_class(label, 1, -2.0, (1, 1, 1))
    omit_class(label, 1)
    swap_classes(label, 1, 2)
    merge_classes(label, 1, 2)
    translate_label(label, (3.0, 0.0, 0.0), (1, 1, 1))
    elastic_deform(label, (1, 1, 1), 3.0, 8.0, seed=0)
    remove_slices(label, 2, 0.5, seed=0)
    assert np.array_equal(label, original)


def test_omit_swap_merge_exact():
    label = np.array([[[0, 1, 2, 3, 1, 2]]], dtype=np.uint8)
    assert omit_class(label, 1).tolist() == [[[0, 0, 2, 3, 0, 2]]]
    assert swap_classes(label, 1, 2).tolist() == [[[0, 2, 1, 3, 2, 1]]]
    assert merge_classes(label, 2, 3).tolist() == [[[0, 1, 3, 3, 1, 3]]]
    assert swap_classes(label, 1, 1).tolist() == label.tolist()
    assert omit_class(label, 7).tolist() == label.tolist()
    assert omit_class(label, 1).dtype == np.uint8


def test_translate_is_an_exact_voxel_shift():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=(10, 12, 8)).astype(np.uint8)
    spacing = (2.0, 1.0, 4.0)
    out = translate_label(label, (4.0, -3.0, 8.4), spacing)  # -> (+2, -3, +2) voxels
    expected = np.zeros_like(label)
    expected[2:, :-3, 2:] = label[:-2, 3:, :-2]
    assert np.array_equal(out, expected)
    assert not translate_label(label, (100.0, 0.0, 0.0), spacing).any()
    assert np.array_equal(translate_label(label, (0.4, 0.0, 0.0), spacing), label)


def test_elastic_deform_shape_determinism_and_effect():
    spacing = (2.0, 2.0, 3.0)
    label = sphere((32, 32, 24), spacing, 18.0)
    label[sphere((32, 32, 24), spacing, 8.0) == 1] = 2
    a = elastic_deform(label, spacing, displacement_mm=6.0, control_spacing_mm=20.0, seed=1)
    b = elastic_deform(label, spacing, displacement_mm=6.0, control_spacing_mm=20.0, seed=1)
    c = elastic_deform(label, spacing, displacement_mm=6.0, control_spacing_mm=20.0, seed=2)
    g = elastic_deform(label, spacing, 6.0, 20.0, seed=np.random.default_rng(1))
    assert a.shape == label.shape and a.dtype == label.dtype
    assert np.array_equal(a, b) and np.array_equal(a, g)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) <= {0, 1, 2}
    dice = dice_per_class(label, a, (1, 2))
    assert 0.5 < dice[1] < 0.99 and dice[2] < 0.99
    assert np.array_equal(elastic_deform(label, spacing, 0.0, 20.0, seed=1), label)


def test_remove_slices_blanks_a_contiguous_block_of_the_labelled_extent():
    label = np.zeros((6, 6, 30), np.uint8)
    label[1:5, 1:5, 5:25] = 1  # labelled extent along k: 20 slices
    for seed in range(5):
        out = remove_slices(label, axis=2, fraction=0.25, seed=seed)
        removed = np.flatnonzero(label.any(axis=(0, 1)) & ~out.any(axis=(0, 1)))
        assert removed.size == 5
        assert np.array_equal(removed, np.arange(removed[0], removed[0] + 5))
        assert 5 <= removed[0] and removed[-1] < 25
        assert np.array_equal(out, remove_slices(label, axis=-1, fraction=0.25, seed=seed))
    assert not remove_slices(label, axis=2, fraction=1.0, seed=0).any()
    assert np.array_equal(remove_slices(label, axis=2, fraction=0.0, seed=0), label)
    empty = np.zeros((4, 4, 4), np.uint8)
    assert np.array_equal(remove_slices(empty, 0, 0.5, seed=0), empty)


def test_dice_and_volume_helpers_on_toy_maps():
    a = np.zeros((1, 1, 10), np.uint8)
    b = np.zeros((1, 1, 10), np.uint8)
    a[0, 0, 0:4] = 1  # 4 voxels
    b[0, 0, 2:8] = 1  # 6 voxels, overlap 2
    a[0, 0, 8] = 2
    dice = dice_per_class(a, b, [1, 2, 3])
    assert dice[1] == pytest.approx(2 * 2 / (4 + 6))
    assert dice[2] == 0.0
    assert dice[3] == 1.0  # absent from both
    change = volume_change(a, b, (1, 2, 3), spacing=(2.0, 1.0, 0.5))
    assert change[1] == pytest.approx(0.5)
    assert change[2] == -1.0
    assert math.isnan(change[3])
    assert class_volumes_ml(a, (1,), (10.0, 10.0, 10.0)) == {1: pytest.approx(4.0)}


def test_registry_names_match_functions():
    assert PERTURBATIONS["dilate_class"] is dilate_class
    assert all(fn.__name__ == name for name, fn in PERTURBATIONS.items())


@pytest.mark.parametrize("call, fragment", [
    (lambda lab: dilate_class(lab, 1, 2.0, (1.0, -1.0, 1.0)), "spacing"),
    (lambda lab: dilate_class(lab, 1, 2.0, (1.0, 1.0)), "spacing"),
    (lambda lab: dilate_class(lab[0], 1, 2.0, (1.0, 1.0)), "3-D"),
    (lambda lab: dilate_class(lab.astype(float), 1, 2.0, (1.0, 1.0, 1.0)), "integer dtype"),
    (lambda lab: dilate_class(lab, 1, float("nan"), (1.0, 1.0, 1.0)), "mm"),
    (lambda lab: dilate_class(lab, 1.5, 2.0, (1.0, 1.0, 1.0)), "class_id"),
    (lambda lab: swap_classes(lab, 1, 300), "b"),
    (lambda lab: merge_classes(lab, 1, -1), "target"),
    (lambda lab: translate_label(lab, (1.0, 2.0), (1.0, 1.0, 1.0)), "shift_mm"),
    (lambda lab: elastic_deform(lab, (1.0, 1.0, 1.0), -1.0, 10.0, seed=0), "displacement_mm"),
    (lambda lab: elastic_deform(lab, (1.0, 1.0, 1.0), 1.0, 0.0, seed=0), "control_spacing_mm"),
    (lambda lab: elastic_deform(lab, (1.0, 1.0, 1.0), 1.0, 10.0, seed="x"), "seed"),
    (lambda lab: remove_slices(lab, 3, 0.5, seed=0), "axis"),
    (lambda lab: remove_slices(lab, 0, 1.5, seed=0), "fraction"),
    (lambda lab: dice_per_class(lab, lab[:2], (1,)), "same shape"),
    (lambda lab: volume_change(lab, lab, (1,), (0.0, 1.0, 1.0)), "spacing"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, fragment):
    label = sphere((6, 6, 6), (1.0, 1.0, 1.0), 2.0)
    with pytest.raises(ValueError, match=fragment):
        call(label)
