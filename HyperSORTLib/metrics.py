"""Per-class overlap and volume of label maps: the one Dice and the one volume of the library.

Label maps are integer arrays of class indices on one voxel grid. Conventions, used everywhere
a Dice or a volume is reported (manifests, the audit's cluster behaviour, the demo's scores,
the Slicer module's comparison table):

* the Dice of a class absent from both maps is 1.0;
* the relative volume change of a class absent from the reference is NaN;
* volumes are in millilitres (voxel count times the voxel volume in mm^3 / 1000).

Only numpy is needed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["class_volumes_ml", "confusion_matrix", "dice_from_confusion", "dice_per_class", "label_overlap",
           "volume_change", "voxel_volume_ml"]

_CHUNK = 1 << 23  # voxels counted at once (bounds the int64 temporaries to ~64 MB)


def _check_label(label: object, name: str) -> np.ndarray:
    if not isinstance(label, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, found {type(label).__name__}.")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, found {label.dtype}.")
    if label.ndim == 0:
        raise ValueError(f"{name} must have at least one axis, found a 0-D array.")
    return label


def _check_pair(a: object, b: object) -> tuple[np.ndarray, np.ndarray]:
    a, b = _check_label(a, "a"), _check_label(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, found {a.shape} and {b.shape}.")
    return a, b


def _class_ids(values: object) -> tuple[int, ...]:
    items = [values] if isinstance(values, numbers.Integral) else values
    try:
        items = list(items)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(f"class_ids must be an iterable of integer class ids, found {values!r}.") from None
    for n, v in enumerate(items):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 0:
            raise ValueError(f"class_ids[{n}] must be a non-negative integer class id, found {v!r}.")
    return tuple(int(v) for v in items)


def voxel_volume_ml(spacing: Sequence[float], ndim: int | None = None) -> float:
    """Volume of one voxel in millilitres from its size in millimetres.

    Raises:
        ValueError: ``spacing`` is not ``ndim`` finite positive numbers.
    """
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be a sequence of positive numbers (mm), found {spacing!r}.") from None
    if ndim is not None and len(values) != ndim:
        raise ValueError(f"spacing must have {ndim} entries (one per label axis), found {len(values)}: {spacing!r}.")
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing entries must be finite and > 0 mm, found {spacing!r}.")
    return float(np.prod(values)) / 1000.0


def confusion_matrix(a: np.ndarray, b: np.ndarray, num_classes: int) -> np.ndarray:
    """Voxel counts ``[num_classes, num_classes]``: entry ``[i, j]`` counts voxels that are ``i`` in
    ``a`` and ``j`` in ``b``.

    Raises:
        ValueError: the maps are not integer arrays of one shape, or hold values outside
            ``0..num_classes-1``.
    """
    a, b = _check_pair(a, b)
    k = int(num_classes)
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    counts = np.zeros(k * k, dtype=np.int64)
    for start in range(0, flat_a.size, _CHUNK):
        pa = flat_a[start:start + _CHUNK].astype(np.int64)
        pb = flat_b[start:start + _CHUNK].astype(np.int64)
        if pa.size and (min(pa.min(), pb.min()) < 0 or max(pa.max(), pb.max()) >= k):
            raise ValueError(f"label maps hold values outside 0..{k - 1}: found "
                             f"{min(pa.min(), pb.min())}..{max(pa.max(), pb.max())}.")
        counts += np.bincount(pa * k + pb, minlength=k * k)
    return counts.reshape(k, k)


def dice_from_confusion(table: np.ndarray) -> dict[int, float]:
    """Dice of every class ``1..K-1`` from a confusion table (counts or volumes)."""
    table = np.asarray(table)
    out: dict[int, float] = {}
    for c in range(1, table.shape[0]):
        total = float(table[c].sum() + table[:, c].sum())
        out[c] = 1.0 if total == 0 else 2.0 * float(table[c, c]) / total
    return out


def _counts(label: np.ndarray, class_ids: Sequence[int]) -> dict[int, int]:
    flat = label.reshape(-1)
    return {c: int(np.count_nonzero(flat == c)) for c in class_ids}


def dice_per_class(a: np.ndarray, b: np.ndarray, class_ids: Iterable[int]) -> dict[int, float]:
    """Dice overlap of each class between two label maps.

    Args:
        a: integer label map (e.g. the clean reference).
        b: integer label map of the same shape (e.g. the perturbed one, or a prediction).
        class_ids: classes to compare.

    Returns:
        ``{class_id: dice}``; 1.0 when the class is absent from both maps.

    Raises:
        ValueError: the maps are not integer arrays of one shape, or a class id is not a
            non-negative integer.
    """
    a, b = _check_pair(a, b)
    ids = _class_ids(class_ids)
    n_a, n_b = _counts(a, ids), _counts(b, ids)
    agree = a == b
    both = _counts(a[agree], ids)
    return {c: 1.0 if n_a[c] + n_b[c] == 0 else 2.0 * both[c] / (n_a[c] + n_b[c]) for c in ids}


def class_volumes_ml(label: np.ndarray, class_ids: Iterable[int], spacing: Sequence[float]) -> dict[int, float]:
    """Physical volume of each class in millilitres.

    Raises:
        ValueError: ``label`` is not an integer array, ``spacing`` does not match its axes, or
            a class id is not a non-negative integer.
    """
    label = _check_label(label, "label")
    voxel_ml = voxel_volume_ml(spacing, label.ndim)
    return {c: n * voxel_ml for c, n in _counts(label, _class_ids(class_ids)).items()}


def volume_change(a: np.ndarray, b: np.ndarray, class_ids: Iterable[int],
                  spacing: Sequence[float]) -> dict[int, float]:
    """Relative volume change ``(V_b - V_a) / V_a`` of each class.

    Returns:
        ``{class_id: change}``, e.g. 0.25 for 25 % larger in ``b``, -1.0 when the class vanished;
        NaN when the class is absent from ``a``.

    Raises:
        ValueError: the maps are not integer arrays of one shape, ``spacing`` is invalid, or a
            class id is not a non-negative integer.
    """
    a, b = _check_pair(a, b)
    ids = _class_ids(class_ids)
    vol_a, vol_b = class_volumes_ml(a, ids, spacing), class_volumes_ml(b, ids, spacing)
    return {c: (vol_b[c] - vol_a[c]) / vol_a[c] if vol_a[c] > 0 else float("nan") for c in ids}


def label_overlap(a: np.ndarray, b: np.ndarray, num_classes: int,
                  spacing: Sequence[float]) -> tuple[dict[int, float], dict[int, float]]:
    """Dice and relative volume change of classes ``1..num_classes-1``, from one confusion count.

    The same values as :func:`dice_per_class` and :func:`volume_change`, in one pass over the voxels.
    """
    table = confusion_matrix(a, b, num_classes)
    voxel_ml = voxel_volume_ml(spacing, a.ndim)
    change = {}
    for c in range(1, int(num_classes)):
        vol_a, vol_b = table[c].sum() * voxel_ml, table[:, c].sum() * voxel_ml
        change[c] = float((vol_b - vol_a) / vol_a) if vol_a > 0 else float("nan")
    return dice_from_confusion(table), change
