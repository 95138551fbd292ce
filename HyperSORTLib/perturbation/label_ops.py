"""Label-map perturbations for simulating annotation biases and errors.

Every function here works on an integer label map (a numpy array whose axes are in voxel order
i, j, k) and returns a NEW array of the same shape and dtype; the input is never modified.
Geometric parameters are given in millimetres together with the voxel ``spacing`` so that one
parameter value means the same physical change at any resolution. Random perturbations take an
explicit ``seed`` (an int or a :class:`numpy.random.Generator`) and are deterministic given it.

Bad arguments raise :class:`ValueError` with a message naming the argument, what was expected
and what was found. A class that is absent from the label map is not an error: the perturbation
of an absent class is an unchanged copy.

New perturbations follow the same conventions and are registered, with their parameters, in
:mod:`HyperSORTLib.perturbation.registry` (:data:`PERTURBATIONS`) so that plan files can refer
to them by name.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from HyperSORTLib.perturbation._validation import (
    DIST_TOL_MM,
    SeedLike,
    as_rng,
    bounding_box,
    check_class_id,
    check_class_ids,
    check_finite,
    check_label,
    check_spacing,
    in_classes,
    margin_voxels,
)
from HyperSORTLib.perturbation.deformation import bspline_control_field, warp_nearest

__all__ = [
    "SeedLike",
    "dilate_class",
    "elastic_deform",
    "merge_classes",
    "omit_class",
    "remove_slices",
    "swap_classes",
    "translate_label",
]

# --------------------------------------------------------------------------- class-value edits


def omit_class(label: np.ndarray, class_id: int) -> np.ndarray:
    """Leave a class unannotated: its voxels become background (0).

    Args:
        label: integer label map of any dimensionality.
        class_id: the class to remove.

    Returns:
        A new label map with every ``class_id`` voxel set to 0.

    Raises:
        ValueError: ``label`` is not an integer array or ``class_id`` is not an integer.
    """
    label = check_label(label)
    class_id = check_class_id(class_id, "class_id")
    out = label.copy()
    out[label == class_id] = 0
    return out


def swap_classes(label: np.ndarray, a: int, b: int) -> np.ndarray:
    """Exchange two class ids (e.g. left and right kidney annotated the wrong way round).

    Args:
        label: integer label map of any dimensionality.
        a: first class id.
        b: second class id.

    Returns:
        A new label map where voxels of ``a`` are ``b`` and voxels of ``b`` are ``a``.

    Raises:
        ValueError: ``label`` is not an integer array, or ``a``/``b`` are not integers that
            fit its dtype.
    """
    label = check_label(label)
    a = check_class_id(a, "a", label.dtype)
    b = check_class_id(b, "b", label.dtype)
    out = label.copy()
    out[label == a] = b
    out[label == b] = a
    return out


def merge_classes(label: np.ndarray, source: int, target: int) -> np.ndarray:
    """Relabel one class as another (two structures annotated as one).

    Args:
        label: integer label map of any dimensionality.
        source: class whose voxels are relabelled.
        target: class id they receive.

    Returns:
        A new label map where every ``source`` voxel is ``target``.

    Raises:
        ValueError: ``label`` is not an integer array, or ``source``/``target`` are not
            integers (``target`` must fit the label dtype).
    """
    label = check_label(label)
    source = check_class_id(source, "source")
    target = check_class_id(target, "target", label.dtype)
    out = label.copy()
    out[label == source] = target
    return out


# --------------------------------------------------------------------------- geometric edits


def dilate_class(
    label: np.ndarray,
    class_id: int,
    mm: float,
    spacing: Sequence[float],
    overwrite: Iterable[int] = (0,),
) -> np.ndarray:
    """Grow (or shrink) one class by a physical margin.

    Uses an exact Euclidean distance transform in millimetres, so the boundary moves by ``mm``
    in every direction even on anisotropic grids. A voxel is added when its centre lies within
    ``mm`` of a voxel centre of the class; with negative ``mm`` a voxel is removed when its centre
    lies within ``|mm|`` of a voxel centre outside the class. Distances are measured straight
    through other classes; those classes only decide which voxels may change.

    Args:
        label: 3-D integer label map (axes i, j, k).
        class_id: class to grow or shrink. An absent class gives an unchanged copy.
        mm: margin in millimetres; positive dilates, negative erodes, 0 copies.
        spacing: voxel size in millimetres along each axis.
        overwrite: classes that grown voxels may replace (default: background only), so a
            dilated organ never swallows its annotated neighbours. Ignored when eroding.

    Returns:
        A new label map. Eroded voxels become background (0).

    Raises:
        ValueError: ``label`` is not a 3-D integer array, ``spacing`` does not hold three
            positive numbers, ``mm`` is not finite, or a class id is not an integer.
    """
    label = check_label(label, ndim=3)
    spacing = check_spacing(spacing, label.ndim)
    class_id = check_class_id(class_id, "class_id")
    mm = check_finite(mm, "mm")
    overwrite_ids = check_class_ids(overwrite, "overwrite")
    out = label.copy()
    if mm == 0:
        return out
    # Every voxel that can change lies within the margin of the class (growing) or inside it
    # (shrinking, where the nearest outside voxel lies at most one voxel beyond its box), so
    # the distance transform runs on that box only; the distances inside it are exact.
    box = bounding_box(label == class_id, margin_voxels(mm, spacing) if mm > 0 else 1)
    if box is None:
        return out
    sub = label[box]
    mask = sub == class_id
    if mm > 0:
        # distance_transform_edt measures to the nearest zero element, i.e. to the class.
        distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
        grow = (distance <= mm + DIST_TOL_MM) & ~mask & in_classes(sub, overwrite_ids)
        out[box][grow] = class_id
    else:
        if mask.all():
            # No outside voxel to measure from: the class fills the field of view and the
            # margin lies beyond it, so there is nothing to erode inside the array.
            return out
        distance = ndimage.distance_transform_edt(mask, sampling=spacing)
        out[box][mask & (distance <= -mm + DIST_TOL_MM)] = 0
    return out


def translate_label(label: np.ndarray, shift_mm: Sequence[float], spacing: Sequence[float]) -> np.ndarray:
    """Shift the whole label map (a registration-style misalignment with its image).

    Args:
        label: 3-D integer label map (axes i, j, k).
        shift_mm: shift along each axis in millimetres; positive moves content towards
            higher indices. Each is rounded to the nearest whole voxel (half to even).
        spacing: voxel size in millimetres along each axis.

    Returns:
        A new label map; voxels shifted in from outside the field of view are background.

    Raises:
        ValueError: ``label`` is not a 3-D integer array, or ``shift_mm``/``spacing`` do not
            hold three finite numbers (spacing positive).
    """
    label = check_label(label, ndim=3)
    spacing = check_spacing(spacing, label.ndim)
    try:
        shifts_mm = [check_finite(s, f"shift_mm[{n}]") for n, s in enumerate(shift_mm)]
    except TypeError:
        raise ValueError(f"shift_mm must be a sequence of {label.ndim} numbers (mm), found {shift_mm!r}.") from None
    if len(shifts_mm) != label.ndim:
        raise ValueError(f"shift_mm must have {label.ndim} entries, found {len(shifts_mm)}: {shift_mm!r}.")
    shifts = [int(np.rint(s / h)) for s, h in zip(shifts_mm, spacing)]
    out = np.zeros_like(label)
    src, dst = [], []
    for shift, size in zip(shifts, label.shape):
        if abs(shift) >= size:
            return out  # everything moved out of the field of view
        src.append(slice(max(0, -shift), size - max(0, shift)))
        dst.append(slice(max(0, shift), size - max(0, -shift)))
    out[tuple(dst)] = label[tuple(src)]
    return out


def elastic_deform(
    label: np.ndarray,
    spacing: Sequence[float],
    displacement_mm: float,
    control_spacing_mm: float,
    seed: SeedLike,
) -> np.ndarray:
    """Random smooth (B-spline) deformation of the label map, as in ElasticDeform.

    Displacement vectors drawn from N(0, ``displacement_mm``) per component on a coarse control
    grid with nodes about ``control_spacing_mm`` apart are interpolated to every voxel with a
    cubic spline; the label is then resampled at the displaced positions with nearest-neighbour
    interpolation, so no new class values appear. Content pulled in from outside the field of
    view is background.

    This is the construction of ``elasticdeform.deform_random_grid(label, sigma, points,
    order=0, mode="constant")`` with ``sigma`` and the node spacing in millimetres instead of
    voxels and node counts: nodes span the field of view from the first to the last voxel
    centre, ``label_out(x) = label_in(x + u(x))``, and sources outside ``[0, N - 1]`` are
    background. One difference: the spline through the nodes is extended beyond the end nodes
    by edge replication (``scipy.ndimage.zoom(mode="nearest")``) where elasticdeform mirrors
    the nodes, so the same node displacements give the same values at the nodes but a slightly
    different field between them (most near the edge nodes).

    Args:
        label: 3-D integer label map (axes i, j, k).
        spacing: voxel size in millimetres along each axis.
        displacement_mm: standard deviation of the control-point displacements in mm (>= 0;
            0 gives an unchanged copy).
        control_spacing_mm: distance between control points in mm (> 0); larger values give
            smoother, more global deformations.
        seed: int seed or numpy Generator; the same seed gives the same deformation.

    Returns:
        A new, deformed label map of the same shape and dtype.

    Raises:
        ValueError: ``label`` is not a 3-D integer array, ``spacing`` is invalid,
            ``displacement_mm`` is negative, ``control_spacing_mm`` is not positive, or
            ``seed`` is neither a non-negative int nor a Generator.
    """
    label = check_label(label, ndim=3)
    spacing = check_spacing(spacing, label.ndim)
    displacement_mm = check_finite(displacement_mm, "displacement_mm")
    control_spacing_mm = check_finite(control_spacing_mm, "control_spacing_mm")
    if displacement_mm < 0:
        raise ValueError(f"displacement_mm must be >= 0, found {displacement_mm}.")
    if control_spacing_mm <= 0:
        raise ValueError(f"control_spacing_mm must be > 0, found {control_spacing_mm}.")
    rng = as_rng(seed)
    if displacement_mm == 0:
        return label.copy()
    field = bspline_control_field(label.shape, spacing, displacement_mm, control_spacing_mm, rng)
    return warp_nearest(label, field, mode="constant")


def remove_slices(label: np.ndarray, axis: int, fraction: float, seed: SeedLike) -> np.ndarray:
    """Zero a contiguous block of slices, as if part of the annotation was never done.

    The block covers ``fraction`` of the labelled extent along ``axis`` (the slices between
    the first and the last one holding any foreground), rounded to whole slices with at
    least one slice removed when ``fraction`` > 0. Its position inside that extent is random.

    Args:
        label: 3-D integer label map (axes i, j, k).
        axis: axis across which slices are removed (negative values count from the end).
        fraction: share of the labelled extent to remove, in [0, 1].
        seed: int seed or numpy Generator choosing the block position.

    Returns:
        A new label map; an empty label map, or ``fraction`` 0, gives an unchanged copy.

    Raises:
        ValueError: ``label`` is not a 3-D integer array, ``axis`` is out of range,
            ``fraction`` is outside [0, 1], or ``seed`` is invalid.
    """
    label = check_label(label, ndim=3)
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -label.ndim <= axis < label.ndim:
        raise ValueError(f"axis must be an integer in [{-label.ndim}, {label.ndim - 1}], found {axis!r}.")
    axis = int(axis) % label.ndim
    fraction = check_finite(fraction, "fraction")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], found {fraction}.")
    rng = as_rng(seed)
    out = label.copy()
    other_axes = tuple(a for a in range(label.ndim) if a != axis)
    occupied = np.flatnonzero((label != 0).any(axis=other_axes))
    if fraction == 0 or occupied.size == 0:
        return out
    first, last = int(occupied[0]), int(occupied[-1])
    extent = last - first + 1
    n_remove = min(extent, max(1, int(np.rint(fraction * extent))))
    start = first + int(rng.integers(0, extent - n_remove + 1))
    index: list[slice] = [slice(None)] * label.ndim
    index[axis] = slice(start, start + n_remove)
    out[tuple(index)] = 0
    return out
