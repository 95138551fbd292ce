"""Annotation-style edits of one structure against its surroundings, in millimetres.

Conventions are those of :mod:`HyperSORTLib.perturbation.label_ops`: 3-D integer label maps in
voxel order, ``spacing`` in millimetres, a NEW array of the same shape and dtype returned, the
input never modified, an absent class giving an unchanged copy. Distances are Euclidean between
voxel centres, computed with an exact distance transform restricted to the bounding box of the
structure plus the margin (the distances inside that box are exact, and no voxel outside it can
change).

* :func:`erode_class`: shrink a structure by a margin (its rim becomes background);
* :func:`shift_class`: move one structure rigidly, leaving its old place to the background;
* :func:`shift_boundary`: move the border between two touching structures;
* :func:`annotate_neighbour`: draw an adjacent structure as part of the organ.

Growing a structure into a band of background is :func:`~HyperSORTLib.perturbation.label_ops.dilate_class`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from HyperSORTLib.perturbation._validation import (
    DIST_TOL_MM,
    bounding_box,
    check_class_id,
    check_class_ids,
    check_label,
    check_nonnegative,
    check_finite,
    check_spacing,
    check_vector,
    in_classes,
    margin_voxels,
)
from HyperSORTLib.perturbation.label_ops import dilate_class

__all__ = ["annotate_neighbour", "erode_class", "shift_boundary", "shift_class"]

_CUBE = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


def erode_class(label: np.ndarray, class_id: int, mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Shrink one class by a physical margin: an annotator who draws inside the true border.

    A voxel of the class becomes background (0) when its centre lies within ``mm`` of the centre
    of a voxel outside the class (any other class or background). Equivalent to
    ``dilate_class(label, class_id, -mm, spacing)``.

    Args:
        label: 3-D integer label map (axes i, j, k).
        class_id: class to shrink. An absent class gives an unchanged copy.
        mm: margin in millimetres (>= 0; 0 copies).
        spacing: voxel size in millimetres along each axis.

    Returns:
        A new label map.

    Raises:
        ValueError: ``label`` is not a 3-D integer array, ``spacing`` is invalid, ``mm`` is
            negative or not finite, or ``class_id`` is not an integer.
    """
    mm = check_nonnegative(mm, "mm")
    return dilate_class(label, class_id, -mm, spacing)


def shift_class(
    label: np.ndarray,
    class_id: int,
    shift_mm: Sequence[float],
    spacing: Sequence[float],
    overwrite: Iterable[int] = (0,),
) -> np.ndarray:
    """Move one structure rigidly (e.g. an organ drawn a few slices too high).

    The class's voxels are translated by ``shift_mm`` rounded to whole voxels per axis (half to
    even); its former voxels become background (0), and the moved voxels land only where the
    original label holds the class itself or one of ``overwrite`` (default: background), so other
    annotated structures are never covered. Voxels moved out of the field of view are lost.

    Args:
        label: 3-D integer label map (axes i, j, k).
        class_id: class to move. An absent class gives an unchanged copy.
        shift_mm: shift along each axis in millimetres; positive moves towards higher indices.
        spacing: voxel size in millimetres along each axis.
        overwrite: classes the moved structure may cover.

    Returns:
        A new label map.

    Raises:
        ValueError: ``label`` is not a 3-D integer array, ``shift_mm``/``spacing`` do not hold
            three finite numbers (spacing positive), or a class id is not an integer.
    """
    label = check_label(label, ndim=3)
    spacing_t = check_spacing(spacing, 3)
    class_id = check_class_id(class_id, "class_id")
    shifts_mm = check_vector(shift_mm, 3, "shift_mm")
    overwrite_ids = check_class_ids(overwrite, "overwrite")
    shifts = [int(np.rint(s / h)) for s, h in zip(shifts_mm, spacing_t)]
    out = label.copy()
    box = bounding_box(label == class_id)
    if box is None or not any(shifts):
        return out
    mask = label[box] == class_id
    out[box][mask] = 0
    # The moved structure occupies the class's box shifted by the voxel shift, clipped to the array.
    src, dst = [], []
    for b, shift, size in zip(box, shifts, label.shape):
        lo, hi = max(b.start + shift, 0), min(b.stop + shift, size)
        if lo >= hi:
            return out  # moved out of the field of view
        dst.append(slice(lo, hi))
        src.append(slice(lo - shift - b.start, hi - shift - b.start))
    moved = mask[tuple(src)]
    target = label[tuple(dst)]
    allowed = (target == class_id) | in_classes(target, overwrite_ids)
    out[tuple(dst)][moved & allowed] = class_id
    return out


def shift_boundary(
    label: np.ndarray,
    class_id: int,
    neighbour_id: int,
    mm: float,
    spacing: Sequence[float],
) -> np.ndarray:
    """Move the border between two touching structures by ``mm`` millimetres.

    With ``mm > 0`` the class takes over the voxels of ``neighbour_id`` whose centres lie within
    ``mm`` of a voxel centre of the class (e.g. the liver-kidney border drawn into the kidney);
    with ``mm < 0`` the neighbour takes over the class's voxels within ``|mm|`` of the neighbour.
    No other voxel changes; structures that do not touch are left as they are.

    Args:
        label: 3-D integer label map (axes i, j, k).
        class_id: the structure whose border moves outwards for positive ``mm``.
        neighbour_id: the structure on the other side of the border (may be 0, background,
            which makes this a dilation or erosion against background only).
        mm: signed distance in millimetres (0 copies).
        spacing: voxel size in millimetres along each axis.

    Returns:
        A new label map.

    Raises:
        ValueError: ``label`` is not a 3-D integer array, ``spacing`` is invalid, ``mm`` is not
            finite, a class id is not an integer, or ``class_id == neighbour_id``.
    """
    label = check_label(label, ndim=3)
    class_id = check_class_id(class_id, "class_id", label.dtype)
    neighbour_id = check_class_id(neighbour_id, "neighbour_id", label.dtype)
    if class_id == neighbour_id:
        raise ValueError(f"neighbour_id must differ from class_id, found both {class_id}.")
    mm = check_finite(mm, "mm")
    if mm >= 0:
        return dilate_class(label, class_id, mm, spacing, overwrite=(neighbour_id,))
    return dilate_class(label, neighbour_id, -mm, spacing, overwrite=(class_id,))


def annotate_neighbour(
    label: np.ndarray,
    class_id: int,
    neighbour_id: int,
    spacing: Sequence[float],
    contact_mm: float = 0.0,
) -> np.ndarray:
    """Draw an adjacent structure as part of the organ (e.g. the gallbladder inside the liver).

    Every connected piece (26-connectivity) of ``neighbour_id`` that touches the class (one of its
    voxels shares a face, edge or corner with a voxel of the class) or comes within
    ``contact_mm`` of it (distance between voxel centres) becomes ``class_id`` entirely; pieces
    further away keep their label. A partial take-over of a neighbour is :func:`shift_boundary`;
    a band of unlabelled tissue is :func:`~HyperSORTLib.perturbation.label_ops.dilate_class`.

    Args:
        label: 3-D integer label map (axes i, j, k).
        class_id: the organ that absorbs its neighbour. An absent class gives an unchanged copy.
        neighbour_id: the adjacent structure (a foreground class other than ``class_id``).
        spacing: voxel size in millimetres along each axis.
        contact_mm: extra gap in millimetres still counted as contact (>= 0).

    Returns:
        A new label map.

    Raises:
        ValueError: ``label`` is not a 3-D integer array, ``spacing`` is invalid,
            ``contact_mm`` is negative, a class id is not an integer, ``neighbour_id`` is 0
            (background is not a structure) or equals ``class_id``.
    """
    label = check_label(label, ndim=3)
    spacing_t = check_spacing(spacing, 3)
    class_id = check_class_id(class_id, "class_id", label.dtype)
    neighbour_id = check_class_id(neighbour_id, "neighbour_id", label.dtype)
    if neighbour_id == 0:
        raise ValueError("neighbour_id must be a foreground class, found 0 (background); grow the organ "
                         "into background with dilate_class instead.")
    if neighbour_id == class_id:
        raise ValueError(f"neighbour_id must differ from class_id, found both {class_id}.")
    contact_mm = check_nonnegative(contact_mm, "contact_mm")
    out = label.copy()
    organ_box = bounding_box(label == class_id, margin_voxels(contact_mm, spacing_t))
    if organ_box is None:
        return out
    near_box = label[organ_box]
    if not (near_box == neighbour_id).any():
        return out
    organ = near_box == class_id
    close = ndimage.binary_dilation(organ, structure=_CUBE)
    if contact_mm > 0:
        close |= ndimage.distance_transform_edt(~organ, sampling=spacing_t) <= contact_mm + DIST_TOL_MM
    close &= near_box == neighbour_id
    if not close.any():
        return out
    # Pieces of the neighbour are labelled within its own bounding box: a piece may extend far
    # beyond the organ's box.
    neighbour_box = bounding_box(label == neighbour_id)
    pieces, _ = ndimage.label(label[neighbour_box] == neighbour_id, structure=_CUBE)
    # Map the touching voxels of the organ box into the neighbour box to read their piece ids.
    offset = [o.start - n.start for o, n in zip(organ_box, neighbour_box)]
    idx = np.nonzero(close)
    touched = np.unique(pieces[tuple(i + o for i, o in zip(idx, offset))])
    touched = touched[touched > 0]
    if touched.size:
        out[neighbour_box][np.isin(pieces, touched)] = class_id
    return out
