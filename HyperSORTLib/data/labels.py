"""A case's annotation as one integer class-index map.

:func:`load_label` is the single place where the annotation kinds of a
:class:`~HyperSORTLib.data.cases.CaseRecord` become class indices 0..K-1:

* one label-map file (``case.label``): its values are the annotation values;
* one binary mask per class (``case.masks``, as in TotalSegmentator): mask ``i`` (non-zero
  voxels) is annotation value ``i + 1``. Where masks overlap, the mask listed first wins (the
  lower class index), so the order of the classes is also their priority.

The annotation values then go through :attr:`CaseList.label_values` when it is set: class ``i``
is the voxels whose value is ``label_values[i]``, and every value not listed becomes background
(0). Without ``label_values`` the values must already be class indices 0..K-1.

The array keeps the file's own voxel order (no reorientation); the returned nibabel image gives
its affine and header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from HyperSORTLib.data.cases import CaseList, CaseRecord
from HyperSORTLib.utils.nifti import open_nifti


class LabelError(ValueError):
    """An annotation cannot be turned into class indices; the message names the case and file."""


def affines_match(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> bool:
    """Same grid within a hundredth of a voxel (``spacing``: voxel sizes in mm); float32 header
    rounding is far below this."""
    tol = 1e-2 * float(min(spacing)) if len(spacing) else 1e-3
    return bool(np.allclose(a, b, rtol=0, atol=max(tol, 1e-5)))


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned integer type holding class indices 0..num_classes-1."""
    return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.uint16)


def argmax_labels(scores, axis: int = 0) -> np.ndarray:
    """Arg-max class indices of a torch score tensor as a NumPy array in :func:`label_dtype`.

    Taken as ``max(axis).indices`` (the same indices, ties to the first class: on CPU ``argmax``
    over the leading class axis is about 15x slower), and narrowed on the tensor's device before
    the copy to the host (a GPU copies a quarter or an eighth of the bytes).
    """
    import torch

    num_classes = scores.shape[axis]
    labels = scores.max(axis).indices
    labels = labels.to(torch.uint8) if num_classes <= 256 else labels.to(torch.int32)
    return labels.cpu().numpy().astype(label_dtype(num_classes), copy=False)


def argmax_classes(scores: np.ndarray) -> np.ndarray:
    """``scores.argmax(0)`` of a NumPy ``[K, ...]`` score array in :func:`label_dtype`: ties go to the
    first class. One pass per class, several times faster than ``argmax`` over the leading axis."""
    dtype = label_dtype(scores.shape[0])
    labels = np.zeros(scores.shape[1:], dtype=dtype)
    best = scores[0].copy()
    for k in range(1, scores.shape[0]):
        better = scores[k] > best
        labels[better] = k
        np.maximum(best, scores[k], out=best)
    return labels


def _read_integer_data(image: nib.spatialimages.SpatialImage, case: CaseRecord, path) -> np.ndarray:
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # truncated gzip, short file, bad data type
        raise LabelError(f"Case '{case.case_id}': cannot read the voxels of {path}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise LabelError(f"Case '{case.case_id}': {path} has shape {data.shape}; expected a 3D label map.")
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise LabelError(f"Case '{case.case_id}': {path} contains NaN or infinite values; expected "
                             f"integer label values.")
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise LabelError(f"Case '{case.case_id}': {path} holds non-integer values (e.g. "
                             f"{data[rounded != data].flat[0]!r}); expected integer label values.")
        data = rounded.astype(np.int64)
    elif data.dtype.kind == "b":
        data = data.astype(np.uint8)
    elif data.dtype.kind not in "iu":
        raise LabelError(f"Case '{case.case_id}': {path} has data type {data.dtype}; expected integers.")
    return data


def _open_annotation(case: CaseRecord, path: Path, what: str) -> nib.spatialimages.SpatialImage:
    """:func:`~HyperSORTLib.utils.nifti.open_nifti` with errors that name the case and the file
    (``what``: "label" or "mask")."""
    try:
        return open_nifti(path, f"Case '{case.case_id}': {what} file")
    except FileNotFoundError:
        raise FileNotFoundError(f"Case '{case.case_id}': {what} file {path} does not exist.") from None
    except ValueError as exc:  # unparsable header, or less data than the header declares
        raise LabelError(str(exc)) from exc


def _load_label_file(case: CaseRecord) -> tuple[np.ndarray, nib.spatialimages.SpatialImage]:
    image = _open_annotation(case, case.label, "label")
    return _read_integer_data(image, case, case.label), image


def _load_masks(case: CaseRecord) -> tuple[np.ndarray, nib.spatialimages.SpatialImage]:
    values: np.ndarray | None = None
    first: nib.spatialimages.SpatialImage | None = None
    dtype = label_dtype(len(case.masks) + 1)
    for position, path in enumerate(case.masks):
        image = _open_annotation(case, path, "mask")
        mask = _read_integer_data(image, case, path) != 0
        if first is None:
            first = image
            values = np.zeros(mask.shape, dtype)
        elif mask.shape != values.shape:
            raise LabelError(f"Case '{case.case_id}': mask {path} has shape {mask.shape}, but {case.masks[0]} "
                             f"has {values.shape}; all masks of a case must share one grid.")
        elif not affines_match(image.affine, first.affine, first.header.get_zooms()[:3]):
            raise LabelError(f"Case '{case.case_id}': mask {path} has a different affine from {case.masks[0]}; "
                             f"all masks of a case must share one grid.")
        # earlier masks keep their voxels: the first listed class wins where masks overlap
        values[mask & (values == 0)] = position + 1
    return values, first


def apply_label_values(values: np.ndarray, label_values: Sequence[int] | None, num_classes: int,
                       where: str = "label") -> np.ndarray:
    """Annotation values -> class indices (see the module docstring).

    Args:
        values: integer annotation values.
        label_values: ``label_values[i]`` is the value of class ``i`` (index 0, background, is
            normally 0); ``None`` means the values already are class indices.
        num_classes: K, the number of classes including background.
        where: names the case and file in error messages.

    Raises:
        LabelError: without ``label_values``, a value outside 0..K-1.
    """
    dtype = label_dtype(num_classes)
    if values.size == 0:
        return values.astype(dtype)
    low, high = int(values.min()), int(values.max())
    if label_values is None:
        if low < 0 or high >= num_classes:
            found = np.unique(values)
            bad = found[(found < 0) | (found >= num_classes)]
            raise LabelError(f"{where}: label values {bad[:10].tolist()} are outside the class map "
                             f"0..{num_classes - 1}.")
        return values.astype(dtype, copy=False)
    if len(label_values) != num_classes:
        raise LabelError(f"{where}: {len(label_values)} label values for {num_classes} classes.")
    if high - low < (1 << 22):  # a lookup table over the value range: one pass over the voxels
        lut = np.zeros(high - low + 1, dtype)
        for index, value in enumerate(label_values):
            if index and low <= value <= high:
                lut[value - low] = index
        return lut[values.astype(np.int64, copy=False) - low]
    out = np.zeros(values.shape, dtype)
    for index, value in enumerate(label_values):
        if index:
            out[values == value] = index
    return out


def load_label(case: CaseRecord, case_list: CaseList) -> tuple[np.ndarray, nib.spatialimages.SpatialImage]:
    """The case's annotation as class indices, in the label file's own voxel order.

    Args:
        case: the case (one ``label`` file or ``masks``, one per class).
        case_list: gives the class map (``class_names``) and the optional ``label_values``.

    Returns:
        ``(labels, image)``: a 3D ``uint8`` array (``uint16`` beyond 256 classes) of class
        indices 0..K-1, and the nibabel image it was read from (the first mask for mask cases),
        for its affine and header.

    Raises:
        FileNotFoundError: a label or mask file is missing (named).
        LabelError: unreadable or truncated file, non-integer or non-finite values, masks on
            different grids, values outside the class map (without ``label_values``).
    """
    if case.label is not None:
        values, image = _load_label_file(case)
        where = f"Case '{case.case_id}' ({case.label})"
    elif case.masks:
        values, image = _load_masks(case)
        where = f"Case '{case.case_id}' (masks in {case.masks[0].parent})"
    else:
        raise LabelError(f"Case '{case.case_id}' has neither a label file nor masks.")
    return apply_label_values(values, case_list.label_values, len(case_list.class_names), where), image
