"""Closed-form marginals of Gaussian-field label noise and the soft-Dice threshold t*.

Under the noise of :func:`~HyperSORTLib.perturbation.deformation.gaussian_field_deform`
(displacement components independent, zero mean, standard deviation ``s`` at every voxel) a
voxel ``x`` of the noisy label belongs to the structure ``M`` exactly when ``x + u(x)`` does,
so its probability is the clean mask convolved with the density of ``u(x)``: a Gaussian of
standard deviation ``s`` mm, whatever the correlation length (:func:`marginal_probability`).

The cross-entropy optimum is that marginal; the soft-Dice optimum is the marginal thresholded
at ``t*`` (:func:`marginal_threshold`), found by sorting the probabilities in descending order,
taking prefix sums ``P_k`` and maximising ``D_k = 2 P_k / (k + sum(p))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from HyperSORTLib.perturbation._validation import bounding_box, check_nonnegative, check_spacing

__all__ = ["marginal_probability", "marginal_threshold", "soft_dice_of_threshold"]


def _as_mask(mask: object) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"mask must be a numpy array, found {type(mask).__name__}.")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must be boolean or integer (non-zero = inside), found dtype {mask.dtype}.")
    if mask.ndim == 0:
        raise ValueError("mask must have at least one axis, found a 0-D array.")
    return mask != 0


def _gaussian_kernel(sigma_vox: float) -> np.ndarray:
    """The kernel of ``scipy.ndimage.gaussian_filter1d`` (truncated at 4 standard deviations)."""
    radius = int(4.0 * sigma_vox + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    return ndimage.gaussian_filter1d(impulse, sigma_vox, mode="constant")


def _cell_kernel(sigma_vox: float) -> np.ndarray:
    """P(round(u) = d) for u ~ N(0, sigma_vox^2), d = -r..r: the Gaussian integrated over each voxel."""
    radius = int(math.ceil(4.0 * sigma_vox + 0.5))
    edges = (np.arange(-radius, radius + 2) - 0.5) / sigma_vox
    return np.diff(ndtr(edges))


def marginal_probability(
    mask: np.ndarray,
    std_mm: float,
    spacing: Sequence[float],
    *,
    discrete: bool = False,
) -> np.ndarray:
    """Probability that each voxel is labelled after Gaussian-field noise of std ``std_mm``.

    Args:
        mask: the clean structure (boolean, or integer with non-zero inside), any number of axes.
        std_mm: displacement standard deviation ``s`` in millimetres (>= 0; 0 returns the mask).
        spacing: voxel size in millimetres along each axis.
        discrete: ``False`` (default): the closed form, the mask convolved with a Gaussian of
            standard deviation ``s`` (``scipy.ndimage.gaussian_filter``, truncated at 4 s).
            ``True``: the exact marginal of the nearest-neighbour warp, whose source voxel is
            ``round(x + u)``: along each axis the kernel is the Gaussian integrated over each
            voxel, ``Phi((d + 1/2) h / s) - Phi((d - 1/2) h / s)``. The two agree when ``s`` is
            large compared with the voxel size.

    Returns:
        float64 array of the mask's shape with values in [0, 1]. Outside the field of view the
        mask counts as empty, as the warp reads background there.

    Raises:
        ValueError: ``mask`` is not a boolean/integer array, ``std_mm`` is negative or not
            finite, or ``spacing`` does not match the mask's axes.
    """
    inside = _as_mask(mask)
    std_mm = check_nonnegative(std_mm, "std_mm")
    spacing_t = check_spacing(spacing, inside.ndim)
    result = np.zeros(inside.shape)
    if std_mm == 0:
        result[inside] = 1.0
        return result
    kernels = [_cell_kernel(std_mm / h) if discrete else _gaussian_kernel(std_mm / h) for h in spacing_t]
    # Outside the mask's box grown by the kernel radius the probability is exactly 0.
    box = bounding_box(inside, tuple(len(k) // 2 for k in kernels))
    if box is None:
        return result
    values = inside[box].astype(np.float64)
    for axis, kernel in enumerate(kernels):
        values = ndimage.correlate1d(values, kernel, axis=axis, mode="constant", cval=0.0)
    result[box] = np.clip(values, 0.0, 1.0)
    return result


def _check_probabilities(probabilities: object) -> np.ndarray:
    if not isinstance(probabilities, np.ndarray):
        probabilities = np.asarray(probabilities)
    if not np.issubdtype(probabilities.dtype, np.floating) and not np.issubdtype(probabilities.dtype, np.integer):
        raise ValueError(f"probabilities must be numbers in [0, 1], found dtype {probabilities.dtype}.")
    if probabilities.size == 0:
        raise ValueError("probabilities must hold at least one value, found an empty array.")
    flat = probabilities.ravel()
    if not np.isfinite(flat).all() or flat.min() < 0 or flat.max() > 1:
        raise ValueError(f"probabilities must be finite values in [0, 1], found the range "
                         f"{float(np.nanmin(flat))}..{float(np.nanmax(flat))}.")
    return flat


def marginal_threshold(probabilities: np.ndarray) -> float:
    """The threshold ``t*`` whose mask ``probabilities >= t*`` maximises the soft Dice.

    Sorts the probabilities in descending order ``p_(1) >= p_(2) >= ...``, forms the prefix sums
    ``P_k``, maximises ``D_k = 2 P_k / (k + sum(p))`` over ``k`` and returns ``p_(k*)``. ``D_k``
    is the soft Dice between the top-``k`` mask and the probabilities (the expected overlap
    under the marginal), and among all masks of ``k`` voxels the top ``k`` maximise it, so the
    mask is optimal among all masks; ``D_k*`` is about twice ``t*``.

    Args:
        probabilities: per-voxel probabilities (e.g. :func:`marginal_probability` or a network's
            softmax), any shape.

    Returns:
        ``t*`` as a float. When every probability is 0 the empty mask is optimal and 1.0 is
        returned (no voxel reaches it).

    Raises:
        ValueError: the probabilities are empty, not finite, or outside [0, 1].
    """
    flat = _check_probabilities(probabilities).astype(np.float64, copy=False)
    total = float(flat.sum())
    if total == 0:
        return 1.0
    # Zero probabilities only lengthen the prefix without adding to it, so the best rank lies
    # among the positive ones: sorting those is enough (a small share of a CT volume).
    ordered = np.sort(flat[flat > 0])[::-1]
    prefix = np.cumsum(ordered)
    dice = 2.0 * prefix / (np.arange(1, ordered.size + 1) + total)
    return float(ordered[int(np.argmax(dice))])


def soft_dice_of_threshold(probabilities: np.ndarray, threshold: float) -> float:
    """Soft Dice ``2 sum(p * m) / (sum(m) + sum(p))`` of the mask ``m = probabilities >= threshold``."""
    flat = _check_probabilities(probabilities).astype(np.float64, copy=False)
    chosen = flat >= threshold
    denominator = float(chosen.sum()) + float(flat.sum())
    return 0.0 if denominator == 0 else 2.0 * float(flat[chosen].sum()) / denominator
