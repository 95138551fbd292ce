"""Structure edits (erosion, moved structures and borders, absorbed neighbours), whole-label errors,
the registry, and the B-spline warp engine against the straightforward full-volume computation."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from scipy import ndimage

from HyperSORTLib.perturbation import (
    PERTURBATIONS,
    SPECS,
    annotate_neighbour,
    dilate_class,
    elastic_deform,
    empty_label,
    erode_class,
    replace_label,
    shift_boundary,
    shift_class,
)
from HyperSORTLib.perturbation import label_ops
from HyperSORTLib.perturbation.registry import resolve_class


def ball(shape, spacing, radius_mm, centre_mm=None, class_id=1) -> np.ndarray:
    centre = np.asarray(centre_mm if centre_mm is not None else [(n - 1) / 2 * h for n, h in zip(shape, spacing)])
    grid = np.indices(shape, dtype=float)
    dist = np.sqrt(sum((grid[a] * spacing[a] - centre[a]) ** 2 for a in range(3)))
    return np.where(dist <= radius_mm, class_id, 0).astype(np.uint8)


def equivalent_radius(mask: np.ndarray, spacing) -> float:
    return (3.0 * float(mask.sum()) * float(np.prod(spacing)) / (4.0 * math.pi)) ** (1.0 / 3.0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.1, 2.5)])
@pytest.mark.parametrize("mm", [2.0, 4.5])
def test_erosion_moves_the_surface_inwards_by_mm(spacing, mm):
    radius = 12.0
    shape = tuple(int(2 * (radius + 4) / s) + 3 for s in spacing)
    label = ball(shape, spacing, radius)
    out = erode_class(label, 1, mm, spacing)
    assert equivalent_radius(out == 1, spacing) - equivalent_radius(label == 1, spacing) == pytest.approx(
        -mm, abs=0.5 * max(spacing))
    # Exactly: a voxel survives iff no outside voxel centre lies within mm of it.
    distance = ndimage.distance_transform_edt(label == 1, sampling=spacing)
    assert np.array_equal(out == 1, (label == 1) & (distance > mm + 1e-6))
    assert np.array_equal(out, dilate_class(label, 1, -mm, spacing))


def test_cropped_dilation_equals_the_full_volume_distance_transform():
    rng = np.random.default_rng(3)
    spacing = (0.9, 1.3, 2.0)
    label = np.zeros((40, 36, 20), np.uint8)
    label[ball(label.shape, spacing, 9.0, (12, 20, 15)) == 1] = 1
    label[ball(label.shape, spacing, 6.0, (25, 30, 20)) == 1] = 2
    label[rng.random(label.shape) < 0.01] = 3
    for mm in (3.0, -2.0, 7.5):
        mask = label == 1
        full = label.copy()
        if mm > 0:
            dist = ndimage.distance_transform_edt(~mask, sampling=spacing)
            full[(dist <= mm + 1e-6) & ~mask & (label == 0)] = 1
        else:
            dist = ndimage.distance_transform_edt(mask, sampling=spacing)
            full[mask & (dist <= -mm + 1e-6)] = 0
        assert np.array_equal(dilate_class(label, 1, mm, spacing), full)


def test_shift_class_moves_one_structure_and_respects_neighbours():
    label = np.zeros((20, 12, 10), np.uint8)
    label[4:8, 3:6, 2:5] = 1
    label[10:12, 3:6, 2:5] = 2  # a neighbour in the way
    out = shift_class(label, 1, (6.0, 0.0, 0.0), (2.0, 1.0, 1.0))  # 3 voxels along i
    expected = label.copy()
    expected[4:8, 3:6, 2:5] = 0
    expected[7:10, 3:6, 2:5] = 1  # 7..10 free; 10..11 belong to class 2
    assert np.array_equal(out, expected)
    covering = shift_class(label, 1, (6.0, 0.0, 0.0), (2.0, 1.0, 1.0), overwrite=(0, 2))
    assert (covering[7:11, 3:6, 2:5] == 1).all() and (covering == 2).sum() == (label == 2).sum() - 1 * 3 * 3
    assert not (shift_class(label, 1, (100.0, 0, 0), (1, 1, 1)) == 1).any()  # moved out of view
    assert np.array_equal(shift_class(label, 1, (0.4, 0, 0), (1, 1, 1)), label)


def test_shift_boundary_moves_only_the_shared_border():
    label = np.zeros((30, 8, 8), np.uint8)
    label[2:15, 2:6, 2:6] = 1
    label[15:28, 2:6, 2:6] = 2
    spacing = (1.5, 1.0, 1.0)
    out = shift_boundary(label, 1, 2, 3.0, spacing)  # 2 voxels of class 2 become class 1
    assert (out[15:17, 2:6, 2:6] == 1).all() and (out[17:28, 2:6, 2:6] == 2).all()
    assert np.array_equal(out == 0, label == 0)  # background untouched
    back = shift_boundary(label, 1, 2, -3.0, spacing)
    assert (back[13:15, 2:6, 2:6] == 2).all() and (back[2:13, 2:6, 2:6] == 1).all()
    with pytest.raises(ValueError, match="neighbour_id"):
        shift_boundary(label, 1, 1, 3.0, spacing)


def test_annotate_neighbour_absorbs_touching_pieces_whole():
    label = np.zeros((30, 20, 10), np.uint8)
    label[5:15, 5:15, 2:8] = 1  # organ
    label[15:25, 8:11, 4:6] = 2  # touching piece, reaching far from the organ
    label[20:24, 16:19, 2:4] = 2  # separate piece, 6.3 mm from the organ at the closest
    label[27:30, 2:4, 8:10] = 2  # far piece (13 mm from the organ)
    spacing = (1.0, 1.0, 2.0)
    out = annotate_neighbour(label, 1, 2, spacing)
    assert (out[15:25, 8:11, 4:6] == 1).all()
    assert (out[20:24, 16:19, 2:4] == 2).all() and (out[27:30, 2:4, 8:10] == 2).all()
    wider = annotate_neighbour(label, 1, 2, spacing, contact_mm=9.0)
    # The second piece lies within 9 mm of the organ (hypot(6, 2) mm), the far one does not.
    assert (wider[20:24, 16:19, 2:4] == 1).all() and (wider[27:30, 2:4, 8:10] == 2).all()
    assert np.array_equal(annotate_neighbour(label, 3, 2, spacing), label)
    with pytest.raises(ValueError, match="background"):
        annotate_neighbour(label, 1, 0, spacing)


def test_replace_label_resizes_cell_onto_cell_and_empty_label():
    label = np.zeros((4, 4, 2), np.uint8)
    donor = np.arange(2 * 2 * 1, dtype=np.int16).reshape(2, 2, 1) + 1
    out = replace_label(label, donor)
    assert out.dtype == np.uint8 and out.shape == label.shape
    assert np.array_equal(out, np.repeat(np.repeat(np.repeat(donor, 2, 0), 2, 1), 2, 2).astype(np.uint8))
    same = np.random.default_rng(0).integers(0, 5, (4, 4, 2)).astype(np.uint8)
    assert np.array_equal(replace_label(label, same), same)
    with pytest.raises(ValueError, match="fit"):
        replace_label(label, donor * 100)
    assert not empty_label(same).any() and empty_label(same).dtype == same.dtype


def reference_elastic(label, spacing, displacement_mm, control_spacing_mm, seed):
    """The straightforward computation: dense zoom of the node grid, full coordinate grid."""
    rng = np.random.default_rng(seed)
    n_nodes = [max(2, int(math.ceil((n - 1) * h / control_spacing_mm)) + 1) for n, h in zip(label.shape, spacing)]
    nodes = rng.normal(0.0, displacement_mm, size=(3, *n_nodes))
    factors = [n / m for n, m in zip(label.shape, n_nodes)]
    field = np.stack([ndimage.zoom(nodes[a], factors, order=3, mode="nearest", grid_mode=False) / spacing[a]
                      for a in range(3)])
    return ndimage.map_coordinates(label, np.indices(label.shape) + field, order=0, mode="constant", cval=0)


@pytest.mark.parametrize("shape, spacing, disp, cs", [
    ((40, 32, 24), (2.0, 2.0, 3.0), 6.0, 20.0),
    ((30, 44, 18), (1.0, 0.8, 2.5), 2.0, 12.0),  # small displacement: the cropped region is used
    ((24, 20, 16), (7.0, 7.0, 8.0), 18.0, 80.0),  # the demo cohort's grid and error strength
])
def test_elastic_deform_equals_the_full_volume_computation(shape, spacing, disp, cs):
    label = ball(shape, spacing, 0.3 * min(n * h for n, h in zip(shape, spacing)))
    label[ball(shape, spacing, 0.15 * min(n * h for n, h in zip(shape, spacing))) == 1] = 2
    for seed in range(3):
        expected = reference_elastic(label, spacing, disp, cs, seed)
        assert np.array_equal(elastic_deform(label, spacing, disp, cs, seed), expected)


def test_registry_is_one_table_of_named_functions_with_matching_parameters():
    assert not hasattr(label_ops, "PERTURBATIONS")  # one table, in the registry
    assert set(PERTURBATIONS) == set(SPECS)
    for name, spec in SPECS.items():
        assert PERTURBATIONS[name].__name__ == name and spec.function is PERTURBATIONS[name]
        signature = inspect.signature(spec.function).parameters
        for p in spec.params:
            if spec.derive is None and p.kind != "donor":
                assert p.name in signature, (name, p.name)
        assert ("spacing" in signature) == spec.spacing, name
        assert ("seed" in signature) == spec.seed, name


def test_class_names_resolve_by_name_words_or_index_with_a_clear_error():
    names = ("background", "liver", "right kidney", "kidney_left", "spleen")
    assert resolve_class("liver", names, "here") == 1
    assert resolve_class("Right_Kidney", names, "here") == 2
    assert resolve_class("left kidney", names, "here") == 3
    assert resolve_class(4, names, "here") == 4
    with pytest.raises(ValueError, match=r"here: class 'livr'.*Did you mean 'liver'.*Classes: background, liver"):
        resolve_class("livr", names, "here")
    with pytest.raises(ValueError, match="outside 0..4"):
        resolve_class(9, names, "here")


@pytest.mark.parametrize("call, fragment", [
    (lambda lab: erode_class(lab, 1, -1.0, (1, 1, 1)), "mm must be >= 0"),
    (lambda lab: shift_class(lab, 1, (1.0, 2.0), (1, 1, 1)), "shift_mm"),
    (lambda lab: shift_boundary(lab, 1, 2, float("inf"), (1, 1, 1)), "mm"),
    (lambda lab: annotate_neighbour(lab, 1, 2, (1, 1, 1), contact_mm=-1), "contact_mm"),
    (lambda lab: replace_label(lab, lab[0]), "donor must be a 3-D"),
    (lambda lab: empty_label(lab.astype(float)), "integer dtype"),
])
def test_bad_input_names_the_argument(call, fragment):
    label = ball((8, 8, 8), (1.0, 1.0, 1.0), 3.0)
    with pytest.raises(ValueError, match=fragment):
        call(label)
