"""Argument checks shared by the label perturbations.

Each check raises :class:`ValueError` with a message naming the argument, what was expected and
what was found, and returns the value in a normalised form.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import ndimage

#: An int seed or an already-constructed generator (whose state is then advanced).
SeedLike = int | np.random.Generator

# Distances equal to the requested radius must count as inside it; EDT output is float64, so a
# tolerance far below any physical voxel size absorbs the rounding of sqrt.
DIST_TOL_MM = 1e-6


def check_label(label: object, name: str = "label", ndim: int | None = None) -> np.ndarray:
    if not isinstance(label, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, found {type(label).__name__}.")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, found {label.dtype}.")
    if ndim is not None and label.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, found {label.ndim}-D with shape {label.shape}.")
    if label.ndim == 0:
        raise ValueError(f"{name} must have at least one axis, found a 0-D array.")
    return label


def check_spacing(spacing: object, ndim: int, name: str = "spacing") -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of {ndim} positive numbers (mm), found {spacing!r}.") from None
    if len(values) != ndim:
        raise ValueError(f"{name} must have {ndim} entries (one per label axis), found {len(values)}: {spacing!r}.")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} entries must be finite and > 0 mm, found {spacing!r}.")
    return values


def check_class_id(value: object, name: str, dtype: np.dtype | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer class id, found {value!r}.")
    value = int(value)
    if dtype is not None:
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise ValueError(f"{name} must fit the label dtype {dtype} ({info.min}..{info.max}), found {value}.")
    return value


def check_class_ids(values: object, name: str) -> tuple[int, ...]:
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        return (int(values),)
    try:
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(f"{name} must be an iterable of integer class ids, found {values!r}.") from None
    return tuple(check_class_id(v, f"{name}[{n}]") for n, v in enumerate(items))


def check_finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, found {value!r}.")
    return float(value)


def check_nonnegative(value: object, name: str) -> float:
    value = check_finite(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, found {value}.")
    return value


def check_positive(value: object, name: str) -> float:
    value = check_finite(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, found {value}.")
    return value


def check_vector(values: object, ndim: int, name: str) -> tuple[float, ...]:
    try:
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(f"{name} must be a sequence of {ndim} numbers (mm), found {values!r}.") from None
    if len(items) != ndim:
        raise ValueError(f"{name} must have {ndim} entries, found {len(items)}: {values!r}.")
    return tuple(check_finite(v, f"{name}[{n}]") for n, v in enumerate(items))


def as_rng(seed: object) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative int or a numpy.random.Generator, found {seed!r}.")
    return np.random.default_rng(int(seed))


def check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, found {a.shape} and {b.shape}.")


def bounding_box(mask: np.ndarray, margin: tuple[int, ...] | int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel, grown by ``margin`` voxels per axis
    and clipped to the array; ``None`` for an empty mask."""
    if isinstance(margin, int):
        margin = (margin,) * mask.ndim
    found = ndimage.find_objects(np.asarray(mask, dtype=np.uint8))
    if not found:
        return None
    return tuple(slice(max(0, box.start - m), min(n, box.stop + m)) for box, m, n in zip(found[0], margin, mask.shape))


def margin_voxels(mm: float, spacing: tuple[float, ...]) -> tuple[int, ...]:
    """Whole voxels per axis that cover ``mm`` millimetres, plus one for rounding."""
    return tuple(int(math.ceil(abs(mm) / h)) + 1 for h in spacing)


def in_classes(label: np.ndarray, class_ids: tuple[int, ...]) -> np.ndarray:
    """``np.isin(label, class_ids)``, through a lookup table for 8- and 16-bit labels (one pass)."""
    if label.dtype.itemsize <= 2:
        info = np.iinfo(label.dtype)
        table = np.zeros(int(info.max) - int(info.min) + 1, dtype=bool)
        for c in class_ids:
            if info.min <= c <= info.max:
                table[c - int(info.min)] = True
        return table[label.astype(np.intp) - int(info.min)] if info.min else table[label]
    return np.isin(label, class_ids)
