"""Smooth random deformations of label maps: B-spline control grids and Gaussian random fields.

Both noise models draw a displacement field on a coarse grid of nodes and interpolate it to the
voxels with a separable (tensor-product) operator: the dense field along axis ``a`` of a
component is ``W0 ⊗ W1 ⊗ W2`` applied to the node values, where ``Wa`` maps the nodes of axis
``a`` to its voxels. The label is then resampled at the displaced positions with
nearest-neighbour interpolation (``label_out(x) = label_in(x + u(x))``), so no new class values
appear and content pulled in from outside the field of view is background.

The dense field is only evaluated where it can matter: around the foreground, grown by a bound
on the displacement, one slab at a time, and the label is read with an exact re-implementation
of ``scipy.ndimage.map_coordinates(order=0)``. A 512x512x300 label therefore never holds a full
float64 coordinate grid in memory.

Noise models:

* :func:`gaussian_random_field` / :func:`gaussian_field_deform`: each displacement component is
  an independent, zero-mean, stationary Gaussian random field with standard deviation ``std_mm``
  at every voxel and the squared-exponential covariance
  ``Cov(u(x), u(x + r)) = std_mm**2 * exp(-|r|**2 / (2 * correlation_mm**2))``. It is sampled by
  smoothing white noise on a coarse grid (nodes at most ``correlation_mm / 3`` apart, or the
  voxels themselves when those are coarser) with a Gaussian kernel of standard deviation
  ``correlation_mm / sqrt(2)`` (a Gaussian convolved with itself doubles its variance; the
  kernel is truncated at 3 standard deviations), interpolating linearly to the voxels and
  dividing by the exact standard deviation of the interpolated noise at each voxel. The
  marginal standard deviation is therefore exactly ``std_mm`` at every voxel, and the
  correlation function of the sampled field stays within about 0.02 of the squared exponential.
  The marginal probability that a voxel is labelled is the clean mask convolved with a Gaussian
  of standard deviation ``std_mm``
  (:func:`~HyperSORTLib.perturbation.marginal.marginal_probability`).
* the ElasticDeform-style B-spline grid of
  :func:`~HyperSORTLib.perturbation.label_ops.elastic_deform`, whose dense field is computed by
  :func:`bspline_control_field` here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage

from HyperSORTLib.perturbation._validation import (
    SeedLike,
    as_rng,
    bounding_box,
    check_label,
    check_nonnegative,
    check_positive,
    check_spacing,
)

__all__ = [
    "SeparableField",
    "bspline_control_field",
    "gaussian_field_deform",
    "gaussian_random_field",
    "warp_nearest",
]

# Voxels of the output evaluated per slab (bounds the float64 coordinate arrays to ~100 MB).
_SLAB_VOXELS = 4_000_000
# Nodes of the Gaussian-field grid per correlation length along each axis.
_NODES_PER_CORRELATION = 3
# Gaussian kernels of the field are truncated at this many standard deviations.
_TRUNCATE = 3.0


@dataclass(frozen=True)
class _Axis:
    """Interpolation along one axis: ``weights`` ``(N, n)``; rows whose non-zeros fit a band of
    ``width`` columns from ``start`` are applied as a few shifted blends instead of a product."""

    weights: np.ndarray
    start: np.ndarray
    taps: np.ndarray

    @classmethod
    def of(cls, weights: np.ndarray) -> _Axis:
        nonzero = weights != 0
        first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), 0)
        last = np.where(nonzero.any(axis=1), weights.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1), 0)
        width = int((last - first).max()) + 1
        start = np.minimum(first, weights.shape[1] - width)
        taps = weights[np.arange(weights.shape[0])[:, None], start[:, None] + np.arange(width)]
        return cls(weights, start, taps)

    @property
    def banded(self) -> bool:
        return self.taps.shape[1] <= self.weights.shape[1] // 2

    def columns(self, rows: slice) -> tuple[int, int]:
        """Node range ``[lo, hi)`` that output ``rows`` read."""
        if not self.banded:
            return 0, self.weights.shape[1]
        start = self.start[rows]
        return int(start.min()), int(start.max()) + self.taps.shape[1]

    def apply(self, values: np.ndarray, rows: slice, lo: int, axis: int, out: np.ndarray | None = None) -> np.ndarray:
        """Interpolate ``values`` (holding nodes ``lo..`` along ``axis``) at output ``rows``
        (into ``out``, a C-contiguous float64 array, when given; axis 0 only)."""
        if self.banded:
            start = self.start[rows] - lo
            taps = self.taps[rows]
            shape = [1] * values.ndim
            shape[axis] = -1
            result = np.multiply(np.take(values, start, axis=axis), taps[:, 0].reshape(shape), out=out)
            for j in range(1, taps.shape[1]):
                result += np.take(values, start + j, axis=axis) * taps[:, j].reshape(shape)
            return result
        w = self.weights[rows, lo:lo + values.shape[axis]]
        if axis == 0:
            flat_out = None if out is None else out.reshape(w.shape[0], -1)
            result = np.matmul(w, values.reshape(values.shape[0], -1), out=flat_out)
            return result.reshape(w.shape[0], *values.shape[1:])
        if axis == values.ndim - 1:
            return values @ w.T
        # axis 1 of a 3-D array: one product over the nodes of that axis
        h, n, length = values.shape
        moved = np.ascontiguousarray(values.transpose(1, 0, 2)).reshape(n, h * length)
        return np.ascontiguousarray((w @ moved).reshape(w.shape[0], h, length).transpose(1, 0, 2))


@dataclass(frozen=True)
class SeparableField:
    """A displacement field in voxels: ``field[c] = scale[c] * (W0 ⊗ W1 ⊗ W2) nodes[c]``.

    Attributes:
        nodes: node values, shape ``(3, n0, n1, n2)``.
        weights: ``weights[a]`` has shape ``(N_a, n_a)``: row ``i`` interpolates voxel ``i`` of
            axis ``a`` from the nodes of that axis.
        scale: factor per component turning node units into voxels along that component's axis.
    """

    nodes: np.ndarray
    weights: tuple[np.ndarray, np.ndarray, np.ndarray]
    scale: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(w.shape[0] for w in self.weights)

    @cached_property
    def _axes(self) -> tuple[_Axis, ...]:
        return tuple(_Axis.of(w) for w in self.weights)

    def bound(self) -> np.ndarray:
        """Upper bound on ``|field[c]|`` over all voxels, per component (voxels)."""
        gain = math.prod(float(np.abs(w).sum(axis=1).max()) for w in self.weights)
        peak = np.array([max(float(self.nodes[c].max()), -float(self.nodes[c].min()))
                         for c in range(self.nodes.shape[0])])
        return peak * gain * np.abs(np.asarray(self.scale))

    def evaluate(self, box: tuple[slice, ...] | None = None) -> np.ndarray:
        """The dense field over ``box`` (default: every voxel), shape ``(3, *box_shape)``, float64."""
        box = box or tuple(slice(0, n) for n in self.shape)
        a0 = self._axes[0]
        lo, hi = a0.columns(box[0])
        size = [len(range(n)[b]) for n, b in zip(self.shape, box)]
        out = np.empty((self.nodes.shape[0], *size))
        for c in range(self.nodes.shape[0]):
            a0.apply(self._partial(c, lo, hi, box[1], box[2]), box[0], lo, axis=0, out=out[c])  # (L0, L1, L2)
        return out

    def _partial(self, c: int, lo: int, hi: int, rows1: slice, rows2: slice) -> np.ndarray:
        """Component ``c`` interpolated along axes 2 and 1 for node rows ``lo..hi`` of axis 0,
        scaled to voxels: ``(hi - lo, L1, L2)``. Kept for the next slab when it reads every node
        row (a dense axis 0), since then every slab needs the same array."""
        key = (c, lo, hi, rows1.start, rows1.stop, rows2.start, rows2.stop)
        cache = self.__dict__.setdefault("_cache", {})
        if key in cache:
            return cache[key]
        a1, a2 = self._axes[1], self._axes[2]
        t = a2.apply(self.nodes[c, lo:hi], rows2, 0, axis=2)  # (h, n1, L2)
        t = a1.apply(t, rows1, 0, axis=1)  # (h, L1, L2)
        t *= self.scale[c]  # on the small intermediate rather than the dense field
        if not self._axes[0].banded:
            cache = {k: v for k, v in cache.items() if k[0] != c}
            cache[key] = t
            self.__dict__["_cache"] = cache
        return t


def _gather_nearest(label: np.ndarray, coords: np.ndarray, mode: str) -> np.ndarray:
    """``map_coordinates(label, coords, order=0, mode=mode, cval=0)`` for ``constant`` and
    ``grid-constant``: round half up, background outside. Overwrites ``coords``."""
    flat = np.zeros(coords.shape[1:], dtype=np.intp)
    valid = np.ones(coords.shape[1:], dtype=bool)
    for axis, size in enumerate(label.shape):
        c = coords[axis]
        c += 0.5
        if mode == "constant":  # inside when 0 <= c <= size - 1
            valid &= c >= 0.5
            valid &= c <= size - 0.5
        np.floor(c, out=c)
        if mode != "constant":  # inside when the rounded index is a voxel
            valid &= c >= 0
            valid &= c <= size - 1
        flat *= size
        flat += c.astype(np.intp)
    flat[~valid] = 0
    values = label.reshape(-1).take(flat)
    values[~valid] = 0
    return values


def warp_nearest(label: np.ndarray, field: SeparableField, mode: str = "grid-constant") -> np.ndarray:
    """Resample ``label`` at ``x + field(x)`` with nearest-neighbour interpolation.

    Only voxels whose source can reach the foreground are computed: the bounding box of the
    non-zero voxels grown by :meth:`SeparableField.bound` (every other voxel samples background).
    The result equals ``scipy.ndimage.map_coordinates(label, grid + field, order=0, mode=mode)``.

    Args:
        label: 3-D integer label map.
        field: displacement in voxels on ``label``'s grid.
        mode: ``"grid-constant"`` (a source counts as inside when it rounds to a voxel of the
            array) or ``"constant"`` (inside only within ``[0, N - 1]``, SciPy's convention).

    Returns:
        A new label map of the same shape and dtype.
    """
    if field.shape != label.shape:
        raise ValueError(f"field shape {field.shape} must equal the label shape {label.shape}.")
    if mode not in ("constant", "grid-constant"):
        raise ValueError(f"mode must be 'constant' or 'grid-constant', found {mode!r}.")
    out = np.zeros_like(label)
    reach = tuple(int(math.ceil(b)) + 1 for b in field.bound())
    region = bounding_box(label != 0, reach)
    if region is None:
        return out
    r0, r1, r2 = region
    plane = (r1.stop - r1.start) * (r2.stop - r2.start)
    step = max(1, _SLAB_VOXELS // max(plane, 1))
    j = np.arange(r1.start, r1.stop, dtype=np.float64)[:, None]
    k = np.arange(r2.start, r2.stop, dtype=np.float64)[None, :]
    for start in range(r0.start, r0.stop, step):
        slab = (slice(start, min(start + step, r0.stop)), r1, r2)
        coords = field.evaluate(slab)
        coords[0] += np.arange(slab[0].start, slab[0].stop, dtype=np.float64)[:, None, None]
        coords[1] += j
        coords[2] += k
        out[slab] = _gather_nearest(label, coords, mode)
    return out


# --------------------------------------------------------------------------- B-spline control grid


def _zoom_weights(n_nodes: int, n_out: int, order: int, mode: str) -> np.ndarray:
    """Matrix ``(n_out, n_nodes)`` of ``scipy.ndimage.zoom`` along one axis with the end nodes on
    the end voxels (``grid_mode=False``): column ``j`` is the zoomed unit impulse at node ``j``."""
    if n_nodes == n_out:
        return np.eye(n_out)
    impulses = np.eye(n_nodes)
    return np.stack([ndimage.zoom(impulses[j], n_out / n_nodes, order=order, mode=mode, grid_mode=False)
                     for j in range(n_nodes)], axis=1)


def bspline_control_field(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    displacement_mm: float,
    control_spacing_mm: float,
    rng: np.random.Generator,
) -> SeparableField:
    """Random control-grid displacement interpolated by cubic B-splines, as in ElasticDeform.

    Nodes about ``control_spacing_mm`` apart (at least 2 per axis) span the field of view from
    the first to the last voxel centre; each holds a displacement drawn from
    ``N(0, displacement_mm**2)`` per component (drawn in one ``rng.normal`` call of shape
    ``(3, n0, n1, n2)``). The cubic spline through the node values (prefiltered with edge
    extension, ``scipy.ndimage.zoom(order=3, mode="nearest")``) gives the displacement at every
    voxel, converted from millimetres to voxels along each axis.
    """
    extent_mm = [(n - 1) * h for n, h in zip(shape, spacing)]
    n_nodes = [max(2, int(math.ceil(e / control_spacing_mm)) + 1) for e in extent_mm]
    nodes = rng.normal(0.0, displacement_mm, size=(len(shape), *n_nodes))
    weights = tuple(_zoom_weights(n, size, 3, "nearest") for n, size in zip(n_nodes, shape))
    return SeparableField(nodes, weights, tuple(1.0 / h for h in spacing))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Gaussian random field


def _linear_weights(n_nodes: int, n_out: int) -> np.ndarray:
    """Linear interpolation ``(n_out, n_nodes)`` with the end nodes on the end voxels."""
    if n_nodes == n_out:
        return np.eye(n_out)
    position = np.arange(n_out) * (n_nodes - 1) / (n_out - 1)
    left = np.minimum(np.floor(position).astype(int), n_nodes - 2)
    frac = position - left
    weights = np.zeros((n_out, n_nodes))
    weights[np.arange(n_out), left] = 1.0 - frac
    weights[np.arange(n_out), left + 1] = frac
    return weights


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """The exact discrete kernel ``scipy.ndimage.gaussian_filter1d`` applies."""
    radius = int(_TRUNCATE * sigma + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    return ndimage.gaussian_filter1d(impulse, sigma, mode="constant", truncate=_TRUNCATE)


def _grf_axis(n_voxels: int, spacing: float, correlation_mm: float) -> tuple[int, float, np.ndarray]:
    """Nodes, kernel sigma (in nodes) and normalised interpolation weights along one axis."""
    extent = (n_voxels - 1) * spacing
    node_spacing = correlation_mm / _NODES_PER_CORRELATION
    n_nodes = n_voxels if node_spacing <= spacing else max(2, int(math.ceil(extent / node_spacing)) + 1)
    n_nodes = min(n_nodes, n_voxels)
    node_mm = extent / (n_nodes - 1) if n_nodes > 1 else spacing
    sigma = correlation_mm / math.sqrt(2.0) / node_mm
    weights = _linear_weights(n_nodes, n_voxels) if n_voxels > 1 else np.ones((1, 1))
    # Covariance of the smoothed noise between nodes i and j: autocorrelation of the kernel.
    kernel = _gaussian_kernel(sigma)
    autocorr = np.correlate(kernel, kernel, mode="full")
    lag = np.abs(np.subtract.outer(np.arange(n_nodes), np.arange(n_nodes)))
    centre = len(kernel) - 1
    cov = np.where(lag <= centre, autocorr[np.minimum(centre + lag, len(autocorr) - 1)], 0.0)
    variance = ((weights @ cov) * weights).sum(axis=1)
    return n_nodes, sigma, weights / np.sqrt(variance)[:, None]


def _grf_field(shape: tuple[int, ...], spacing: tuple[float, ...], std_mm: float, correlation_mm: float,
               rng: np.random.Generator) -> SeparableField:
    axes = [_grf_axis(n, h, correlation_mm) for n, h in zip(shape, spacing)]
    n_nodes = tuple(a[0] for a in axes)
    sigmas = tuple(a[1] for a in axes)
    pad = tuple(int(_TRUNCATE * s + 0.5) for s in sigmas)
    # Noise on a grid padded by the kernel radius: every kept node sees a full kernel, so the
    # smoothed noise is stationary up to the edges of the field of view. float32 halves the
    # cost; the field is normalised exactly afterwards.
    padded = tuple(n + 2 * p for n, p in zip(n_nodes, pad))
    core = tuple(slice(p, p + n) for p, n in zip(pad, n_nodes))
    nodes = np.empty((len(shape), *n_nodes), dtype=np.float32)
    for c in range(len(shape)):
        noise = rng.standard_normal(padded, dtype=np.float32)
        nodes[c] = ndimage.gaussian_filter(noise, sigmas, mode="constant", truncate=_TRUNCATE)[core]
    weights = tuple(a[2] for a in axes)
    return SeparableField(nodes, weights, tuple(std_mm / h for h in spacing))  # type: ignore[arg-type]


def _check_grf_args(std_mm: object, correlation_mm: object) -> tuple[float, float]:
    return check_nonnegative(std_mm, "std_mm"), check_positive(correlation_mm, "correlation_mm")


def gaussian_random_field(
    shape: Sequence[int],
    spacing: Sequence[float],
    std_mm: float,
    correlation_mm: float,
    seed: SeedLike,
) -> np.ndarray:
    """Sample the Gaussian random displacement field of :func:`gaussian_field_deform`.

    Args:
        shape: voxels along i, j, k.
        spacing: voxel size in millimetres along each axis.
        std_mm: standard deviation of each displacement component at every voxel (>= 0).
        correlation_mm: correlation length ``l`` (> 0): the covariance at distance ``r`` is
            ``std_mm**2 * exp(-r**2 / (2 * l**2))``.
        seed: int seed or numpy Generator; the same seed gives the same field, and the same
            field as :func:`gaussian_field_deform` with that seed.

    Returns:
        float64 array ``(3, *shape)``: displacement in millimetres along i, j, k.

    Raises:
        ValueError: ``shape`` is not three positive integers, ``spacing`` is invalid,
            ``std_mm`` is negative, ``correlation_mm`` is not positive, or ``seed`` is invalid.
    """
    shape_t = tuple(int(n) for n in shape)
    if len(shape_t) != 3 or any(n < 1 for n in shape_t):
        raise ValueError(f"shape must be 3 positive integers, found {tuple(shape)!r}.")
    spacing_t = check_spacing(spacing, 3)
    std_mm, correlation_mm = _check_grf_args(std_mm, correlation_mm)
    field = _grf_field(shape_t, spacing_t, std_mm, correlation_mm, as_rng(seed))
    return field.evaluate() * np.asarray(spacing_t)[:, None, None, None]


def gaussian_field_deform(
    label: np.ndarray,
    spacing: Sequence[float],
    std_mm: float,
    correlation_mm: float,
    seed: SeedLike,
) -> np.ndarray:
    """Warp the label map by a Gaussian random field (the marginal-thresholding noise model).

    One field per call warps every class of the label (``label_out(x) = label_in(x + u(x))``,
    nearest neighbour; sources outside the field of view are background). ``u`` is the field of
    :func:`gaussian_random_field` for the same arguments and seed.

    Args:
        label: 3-D integer label map (axes i, j, k).
        spacing: voxel size in millimetres along each axis.
        std_mm: displacement standard deviation ``s`` per component (>= 0; 0 copies).
        correlation_mm: correlation length ``l`` of the field (> 0).
        seed: int seed or numpy Generator.

    Returns:
        A new, deformed label map of the same shape and dtype.

    Raises:
        ValueError: ``label`` is not a 3-D integer array, ``spacing`` is invalid, ``std_mm`` is
            negative, ``correlation_mm`` is not positive, or ``seed`` is invalid.

    Example:
        >>> noisy = gaussian_field_deform(label, (0.8, 0.8, 1.5), std_mm=3.0,  # doctest: +SKIP
        ...                               correlation_mm=20.0, seed=0)
    """
    label = check_label(label, ndim=3)
    spacing_t = check_spacing(spacing, 3)
    std_mm, correlation_mm = _check_grf_args(std_mm, correlation_mm)
    rng = as_rng(seed)
    if std_mm == 0:
        return label.copy()
    return warp_nearest(label, _grf_field(label.shape, spacing_t, std_mm, correlation_mm, rng))
