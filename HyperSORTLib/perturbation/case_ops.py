"""Gross errors that replace a case's whole annotation.

Conventions are those of :mod:`HyperSORTLib.perturbation.label_ops` (integer label maps in voxel
order, a NEW array returned, inputs never modified).
"""

from __future__ import annotations

import numpy as np

from HyperSORTLib.perturbation._validation import check_label

__all__ = ["empty_label", "replace_label"]


def empty_label(label: np.ndarray) -> np.ndarray:
    """An annotation file with nothing drawn in it: every voxel background (0).

    Args:
        label: integer label map of any dimensionality.

    Returns:
        A new all-zero label map of the same shape and dtype.

    Raises:
        ValueError: ``label`` is not an integer array.
    """
    return np.zeros_like(check_label(label))


def replace_label(label: np.ndarray, donor: np.ndarray) -> np.ndarray:
    """The label of another case, paired with this case's image (a file mix-up).

    The donor's voxel array is used as it is, as a pipeline that trusts the pairing would read
    it. When its shape differs, it is resized to this case's grid by nearest neighbour in index
    space, voxel cell onto voxel cell: output voxel ``i`` takes donor voxel
    ``floor((i + 0.5) * n_donor / n)`` along each axis (``n`` voxels here, ``n_donor`` there).

    Args:
        label: 3-D integer label map whose shape and dtype the result takes.
        donor: 3-D integer label map of another case (class indices of the same class map).

    Returns:
        A new label map: the donor on this grid, in ``label``'s dtype.

    Raises:
        ValueError: an argument is not a 3-D integer array, or the donor holds values that do not
            fit ``label``'s dtype.
    """
    label = check_label(label, ndim=3)
    donor = check_label(donor, "donor", ndim=3)
    info = np.iinfo(label.dtype)
    if donor.size and (int(donor.min()) < info.min or int(donor.max()) > info.max):
        raise ValueError(f"donor values {int(donor.min())}..{int(donor.max())} do not fit the label dtype "
                         f"{label.dtype}.")
    if donor.shape != label.shape:
        index = np.ix_(*[np.minimum(((np.arange(n) + 0.5) * m / n).astype(np.int64), m - 1)
                         for n, m in zip(label.shape, donor.shape)])
        donor = donor[index]
    return donor.astype(label.dtype, copy=True)
