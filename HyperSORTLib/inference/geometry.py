"""Scan geometry for inference: preprocessing a scan like the training data, and mapping the
prediction back onto the scan's own voxel grid.

A scan is an array ``[I, J, K]`` plus a 4x4 affine from voxel indices ``(i, j, k, 1)`` to RAS
millimetres (the NIfTI/nibabel convention; Slicer's IJK-to-RAS matrix is the same thing).
:func:`prepare_volume` applies the training preprocessing (RAS orientation, the training
spacing, the training intensity scaling) with MONAI and keeps the affine of the grid it
produced, and the box of that grid that holds the patient (:func:`body_box`: everything
denser than air, with a margin), so the network need not run over the air around the body;
:func:`logits_to_labels` interpolates class scores from that grid back onto any target grid,
slab by slab, so a full-resolution result never needs all class channels at full resolution in
memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from HyperSORTLib.config import DataConfig
from HyperSORTLib.data.labels import argmax_classes, argmax_labels, label_dtype
from HyperSORTLib.utils.nifti import SPACING_RANGE_MM, affine_problem, open_nifti, voxel_sizes

__all__ = ["SPACING_RANGE_MM", "MAX_GRID_VOXELS", "AIR_HU", "BODY_MARGIN_MM", "ScanError", "PreparedVolume",
           "check_scan", "load_scan", "prepare_volume", "body_box", "box_on_grid", "shifted_affine", "check_spacing", "check_grid", "resampled_shape",
           "coarser_spacing", "logits_to_labels"]

#: Intensities at or below this (HU) are air: outside the patient for :func:`body_box`. Lung
#: parenchyma (about -850 HU) lies inside the box because the chest wall around it does not.
AIR_HU = -500.0
#: Millimetres of air kept around the body, so the network sees the skin with its surroundings.
BODY_MARGIN_MM = 16.0


class ScanError(ValueError):
    """A scan cannot be segmented as given; the message says what was expected and found."""


@dataclass(frozen=True)
class PreparedVolume:
    """A scan preprocessed like the training data.

    Attributes:
        image: [1, X, Y, Z] float32 on the preprocessed grid (RAS-oriented, training spacing).
        affine: voxel -> RAS affine of the preprocessed grid.
        input_shape: shape of the scan as given.
        input_affine: voxel -> RAS affine of the scan as given.
        body: the box of the preprocessed grid that holds the patient (see :func:`body_box`);
            ``None``: not computed (the whole grid).
    """

    image: torch.Tensor
    affine: np.ndarray
    input_shape: tuple[int, int, int]
    input_affine: np.ndarray
    body: tuple[slice, slice, slice] | None = None

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(v) for v in voxel_sizes(self.affine))


def check_scan(array: np.ndarray, affine: np.ndarray, name: str = "scan") -> tuple[np.ndarray, np.ndarray]:
    """Validate a scan array and its affine; returns them as ``float32`` and ``float64`` arrays.

    Raises:
        ScanError: the array is not 3-D (a trailing singleton 4th axis is accepted), is empty or
            holds NaN/inf, or the affine is not a finite invertible 4x4 matrix with sane spacing.
    """
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ScanError(f"{name}: expected a 3-D volume [I, J, K], found an array of shape {array.shape}.")
    if min(array.shape) < 2:
        raise ScanError(f"{name}: expected a 3-D volume, found shape {array.shape} (a single slice or 2-D image).")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ScanError(f"{name}: expected real intensities, found dtype {array.dtype}.")
    problem = affine_problem(affine)
    if problem is not None:
        raise ScanError(f"{name}: {problem}.")
    affine = np.asarray(affine, dtype=np.float64)
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ScanError(f"{name}: the intensities contain NaN or infinite values.")
    return array, affine


def load_scan(path: str | Path) -> tuple[np.ndarray, np.ndarray, object]:
    """Read a scan with nibabel: ``(array [I, J, K] float32, affine, nibabel image)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ScanError: the file cannot be read or is not a valid 3-D scan (the message names it).
    """
    path = Path(path)
    try:
        image = open_nifti(path, "Input scan")  # refuses a file smaller than its header declares
    except FileNotFoundError:
        raise
    except ValueError as exc:
        raise ScanError(str(exc)) from exc
    try:
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for truncated or foreign files
        raise ScanError(f"Input scan {path}: cannot read its voxels: {exc or type(exc).__name__}") from exc
    array, affine = check_scan(data, image.affine, name=str(path))
    return array, affine, image


#: Largest preprocessed grid (voxels) a scan may be resampled to: 2^29 voxels is 2 GiB per
#: float32 channel, already more than the network's class scores fit in on most machines.
MAX_GRID_VOXELS = 1 << 29


def resampled_shape(shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float]) -> tuple[int, ...]:
    """The shape of the grid covering a scan (``shape``, ``affine``) at voxel size ``spacing`` mm."""
    extent = np.asarray(shape[:3], np.float64) * voxel_sizes(affine)
    return tuple(int(max(1, np.ceil(e / float(s)))) for e, s in zip(extent, spacing))


def check_spacing(spacing: float | Sequence[float], name: str = "spacing") -> tuple[float, float, float]:
    """A grid spacing as three floats within :data:`SPACING_RANGE_MM`, or :class:`ScanError`."""
    try:
        values = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    except (TypeError, ValueError):
        raise ScanError(f"{name}: expected one or three numbers (mm), found {spacing!r}.") from None
    low, high = SPACING_RANGE_MM
    if not (np.isfinite(values).all() and ((values >= low) & (values <= high)).all()):
        raise ScanError(f"{name}: expected {low}..{high} mm per axis, found {spacing!r}.")
    return tuple(float(v) for v in values)


def check_grid(shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float], name: str = "scan",
               what: str = "spacing") -> tuple[int, ...]:
    """The resampled shape, or :class:`ScanError` when it exceeds :data:`MAX_GRID_VOXELS`."""
    grid = resampled_shape(shape, affine, spacing)
    voxels = int(np.prod(grid, dtype=object))
    if voxels > MAX_GRID_VOXELS:
        raise ScanError(f"{name}: {what} {tuple(round(float(s), 4) for s in spacing)} mm would resample the "
                        f"{tuple(int(s) for s in shape[:3])} scan to a {'x'.join(map(str, grid))} grid "
                        f"({voxels:,} voxels, {4 * voxels / 2**30:,.1f} GiB per channel); the limit is "
                        f"{MAX_GRID_VOXELS:,} voxels. Choose a coarser spacing.")
    return grid


def prepare_volume(array: np.ndarray, affine: np.ndarray, data: DataConfig,
                   spacing: Sequence[float] | None = None, name: str = "scan",
                   air: float | None = AIR_HU) -> PreparedVolume:
    """Preprocess a scan exactly as training preprocessed its cases (without the patch crop).

    Args:
        array: intensities [I, J, K] (HU for CT).
        affine: voxel -> RAS affine of ``array``.
        data: the run's data configuration (spacing and intensity scaling).
        spacing: resample to this spacing instead of ``data.spacing`` (a coarser preview grid);
            ``None`` keeps the training spacing, or the scan's own when training did not resample.
        name: how errors refer to the scan.
        air: intensity of air for :attr:`PreparedVolume.body` (see :func:`body_box`); ``None``
            leaves ``body`` unset.
    """
    from monai import transforms as mt
    from monai.data import MetaTensor

    from HyperSORTLib.data.preprocessing import intensity_transform

    array, affine = check_scan(array, affine, name)
    target = spacing if spacing is not None else data.spacing
    if target is not None:  # before MONAI allocates the resampled grid
        check_grid(array.shape, affine, check_spacing(target, f"{name}: spacing"), name)
    image = MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=torch.as_tensor(affine))
    image = mt.Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(image)
    if target is not None:
        image = mt.Spacing(pixdim=tuple(float(s) for s in target), mode="bilinear")(image)
    out = intensity_transform(data)({"image": image})["image"]
    grid_affine = np.asarray(out.affine, dtype=np.float64)
    tensor = torch.as_tensor(out.as_tensor() if hasattr(out, "as_tensor") else out, dtype=torch.float32)
    body = None if air is None else body_box(array, affine, grid_affine, tensor.shape[1:], air)
    return PreparedVolume(tensor.contiguous(), grid_affine, tuple(int(s) for s in array.shape), affine, body)


def body_box(array: np.ndarray, affine: np.ndarray, grid_affine: np.ndarray, grid_shape: Sequence[int],
             air: float = AIR_HU, margin_mm: float = BODY_MARGIN_MM) -> tuple[slice, slice, slice]:
    """The box of a grid (``grid_affine``, ``grid_shape``) that covers every voxel of the scan
    (``array``, ``affine``) denser than ``air``, grown by ``margin_mm`` and clipped to the grid.

    The whole grid when no voxel is denser than air (nothing to crop to: a scan that is not CT,
    or one without a patient).

    Example:
        >>> scan = np.full((10, 10, 10), -1000.0); scan[2:5, 3:6, 4:8] = 40.0
        >>> body_box(scan, np.eye(4), np.eye(4), (10, 10, 10), margin_mm=1.0)
        (slice(1, 6, None), slice(2, 7, None), slice(3, 9, None))
    """
    from HyperSORTLib.data.preprocessing import bounding_box

    whole = tuple(slice(0, int(n)) for n in grid_shape)
    box = bounding_box(np.asarray(array) > air)
    if box is None:
        return whole
    low, high = np.asarray(box[0], np.float64) - 0.5, np.asarray(box[1], np.float64) + 0.5
    corners = np.array([[(high if bit else low)[axis] for axis, bit in enumerate(bits)] + [1.0]
                        for bits in np.ndindex(2, 2, 2)])
    to_grid = np.linalg.solve(np.asarray(grid_affine, np.float64), np.asarray(affine, np.float64))
    points = (to_grid @ corners.T)[:3].T
    margin = margin_mm / voxel_sizes(grid_affine)
    # grid voxel j spans [j - 0.5, j + 0.5]: keep every one that overlaps the grown box
    start = np.floor(points.min(0) - margin - 0.5).astype(int) + 1
    stop = np.ceil(points.max(0) + margin + 0.5).astype(int)
    return tuple(slice(int(max(0, a)), int(min(n, b))) if min(n, b) > max(0, a) else slice(0, int(n))
                 for a, b, n in zip(start, stop, grid_shape))


def coarser_spacing(data: DataConfig, input_affine: np.ndarray, factor: float = 2.0) -> tuple[float, float, float]:
    """A preview spacing: ``factor`` times the training spacing (or the scan's own spacing)."""
    if data.spacing is not None:
        base = np.asarray(data.spacing, dtype=np.float64)
    else:
        base = voxel_sizes(input_affine)
    return tuple(float(s) * factor for s in base)


def _sampling_grid(src_affine: np.ndarray, src_shape: Sequence[int], dst_affine: np.ndarray,
                   dst_shape: Sequence[int], k_range: tuple[int, int], device: torch.device) -> torch.Tensor:
    """grid_sample coordinates (align_corners=True) of target voxels ``[:, :, k0:k1]`` in the source grid."""
    transform = np.linalg.solve(np.asarray(src_affine, np.float64), np.asarray(dst_affine, np.float64))
    k0, k1 = k_range
    axes = [torch.arange(dst_shape[0], dtype=torch.float64), torch.arange(dst_shape[1], dtype=torch.float64),
            torch.arange(k0, k1, dtype=torch.float64)]
    m = torch.as_tensor(transform[:3, :4])
    # source voxel coordinate u = M[:, :3] @ (i, j, k) + M[:, 3], built by broadcasting (no meshgrid copy)
    coords = []
    for row in range(3):
        c = (m[row, 0] * axes[0][:, None, None] + m[row, 1] * axes[1][None, :, None]
             + m[row, 2] * axes[2][None, None, :] + m[row, 3])
        size = int(src_shape[row])
        coords.append(c * (2.0 / (size - 1)) - 1.0 if size > 1 else torch.zeros_like(c))
    # grid_sample reads (x, y, z) = (last, middle, first) spatial axis of the source
    grid = torch.stack([coords[2], coords[1], coords[0]], dim=-1).to(torch.float32)
    return grid.unsqueeze(0).to(device)


def box_on_grid(box: Sequence[slice], src_affine: np.ndarray, dst_affine: np.ndarray,
                dst_shape: Sequence[int]) -> tuple[slice, slice, slice] | None:
    """The voxels of a target grid whose centres lie in ``box`` of the source grid (within half a
    source voxel), as a box of the target grid; ``None`` when the grids are oblique to each other
    (no box of one grid is a box of the other) or nothing falls in the box."""
    transform = np.linalg.solve(np.asarray(src_affine, np.float64), np.asarray(dst_affine, np.float64))
    sources = _axis_permutation(transform)
    if sources is None:
        return None
    out = []
    for d, s in enumerate(sources):
        scale, shift = transform[s, d], transform[s, 3]
        ends = sorted(((box[s].start - 0.5 - shift) / scale, (box[s].stop - 0.5 - shift) / scale))
        start, stop = max(0, int(np.ceil(ends[0] - 1e-9))), min(int(dst_shape[d]), int(np.floor(ends[1] + 1e-9)) + 1)
        if stop <= start:
            return None
        out.append(slice(start, stop))
    return tuple(out)


def shifted_affine(affine: np.ndarray, box: Sequence[slice]) -> np.ndarray:
    """The voxel -> RAS affine of ``box`` of the grid with ``affine``."""
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] += out[:3, :3] @ np.array([b.start for b in box], np.float64)
    return out


def _axis_permutation(transform: np.ndarray, tol: float = 1e-6) -> list[int] | None:
    """Source axis of each target axis when the voxel mapping only scales, flips, permutes and shifts."""
    linear = np.abs(transform[:3, :3])
    sources = [int(np.argmax(linear[:, d])) for d in range(3)]
    if sorted(sources) != [0, 1, 2]:
        return None
    scale = linear.max()
    for d, s in enumerate(sources):
        others = np.delete(linear[:, d], s)
        if others.max(initial=0.0) > tol * scale:
            return None
    return sources


class _SeparableResampler:
    """Trilinear resampling + arg-max for grids related by scaling, flips, axis order and shifts.

    A target voxel falls in one cell of 2x2x2 source voxels. When the arg-max of all eight
    corners is the same class ``c``, the interpolated scores have arg-max ``c`` as well (each
    ``score_c - score_k`` is a convex combination of non-negative corner values), so only voxels
    in cells that straddle a boundary need their scores interpolated. That is a thin shell, so
    the cost is dominated by one integer gather per target voxel.
    """

    def __init__(self, logits: np.ndarray, transform: np.ndarray, sources: list[int]) -> None:
        self.logits = logits  # [K, X, Y, Z] float32
        self.transform = transform
        self.sources = sources
        labels = argmax_classes(logits)
        self.sizes = labels.shape
        corners = [labels]
        for axis in range(3):  # grow the set of corners one axis at a time
            corners = [c for base in corners for c in (self._low(base, axis), self._high(base, axis))]
        self.cell_label = corners[0]
        self.uniform = np.logical_and.reduce([c == corners[0] for c in corners[1:]])

    @staticmethod
    def _low(a: np.ndarray, axis: int) -> np.ndarray:
        index = [slice(None)] * a.ndim
        index[axis] = slice(0, -1) if a.shape[axis] > 1 else slice(None)
        return a[tuple(index)]

    @staticmethod
    def _high(a: np.ndarray, axis: int) -> np.ndarray:
        index = [slice(None)] * a.ndim
        index[axis] = slice(1, None) if a.shape[axis] > 1 else slice(None)
        return a[tuple(index)]

    def _axis(self, d: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell index, upper corner index and weight along source axis ``sources[d]`` for target indices."""
        s = self.sources[d]
        size = self.sizes[s]
        coords = self.transform[s, d] * np.arange(start, stop, dtype=np.float64) + self.transform[s, 3]
        coords = np.clip(coords, 0, size - 1)
        if size == 1:
            zeros = np.zeros(len(coords), dtype=np.intp)
            return zeros, zeros, np.zeros(len(coords), dtype=np.float32)
        cell = np.minimum(np.floor(coords).astype(np.intp), size - 2)
        return cell, cell + 1, (coords - cell).astype(np.float32)

    def labels(self, dst_shape: Sequence[int], k_range: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        ranges = [(0, dst_shape[0]), (0, dst_shape[1]), k_range]
        per_source: list = [None, None, None]
        for d in range(3):
            per_source[self.sources[d]] = self._axis(d, *ranges[d])
        index = np.ix_(*(p[0] for p in per_source))
        out = self.cell_label[index].astype(dtype, copy=False)
        mixed = np.nonzero(~self.uniform[index])
        if len(mixed[0]):
            scores = np.zeros((self.logits.shape[0], len(mixed[0])), dtype=np.float32)
            lo = [per_source[s][0][mixed[s]] for s in range(3)]
            hi = [per_source[s][1][mixed[s]] for s in range(3)]
            w = [per_source[s][2][mixed[s]] for s in range(3)]
            for cx in (0, 1):
                wx = w[0] if cx else 1 - w[0]
                for cy in (0, 1):
                    wxy = wx * (w[1] if cy else 1 - w[1])
                    for cz in (0, 1):
                        weight = wxy * (w[2] if cz else 1 - w[2])
                        corner = self.logits[:, (hi if cx else lo)[0], (hi if cy else lo)[1], (hi if cz else lo)[2]]
                        scores += corner * weight
            out[mixed] = argmax_classes(scores).astype(dtype, copy=False)
        return out.transpose(self.sources)


@torch.no_grad()
def logits_to_labels(logits: torch.Tensor, src_affine: np.ndarray, dst_affine: np.ndarray,
                     dst_shape: Sequence[int], slab_voxels: int = 4_000_000,
                     cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """Class scores on the preprocessed grid -> a label map on the target grid.

    Scores are interpolated trilinearly (so boundaries are as smooth as the target grid allows)
    and the arg-max is taken per target voxel, a slab of target slices at a time. When the two
    grids differ only by scaling, flips, axis order and shifts (every non-oblique scan), only
    voxels near class boundaries are interpolated (see :class:`_SeparableResampler`; the result
    is the same); oblique scans, and scores whose classes change in most cells, use
    ``grid_sample`` on every voxel.

    Args:
        logits: [K, X, Y, Z] scores on the grid with affine ``src_affine``.
        dst_affine, dst_shape: the target grid (typically the input scan's).
        slab_voxels: target voxels interpolated per slab (bounds the memory used).
        cancel: polled between slabs; returning True raises :class:`InterruptedError`.

    Returns:
        labels of shape ``dst_shape`` in :func:`~HyperSORTLib.data.labels.label_dtype` (uint8, uint16
        beyond 256 classes).
    """
    dst_shape = tuple(int(s) for s in dst_shape)
    num_classes = logits.shape[0]
    dtype = label_dtype(num_classes)
    out = np.empty(dst_shape, dtype=dtype)
    transform = np.linalg.solve(np.asarray(src_affine, np.float64), np.asarray(dst_affine, np.float64))
    sources = _axis_permutation(transform)
    source = logits.float()
    separable = None
    if sources is not None:
        separable = _SeparableResampler(source.cpu().numpy(), transform, sources)
        if separable.uniform.mean() < 0.5:  # mostly boundaries (e.g. noisy scores): one fused pass is faster
            separable = None
    per_slice = dst_shape[0] * dst_shape[1]
    step = max(1, slab_voxels // max(per_slice, 1))
    for k0 in range(0, dst_shape[2], step):
        if cancel is not None and cancel():
            raise InterruptedError("Segmentation cancelled.")
        k1 = min(dst_shape[2], k0 + step)
        if separable is not None:
            out[:, :, k0:k1] = separable.labels(dst_shape, (k0, k1), dtype)
            continue
        grid = _sampling_grid(src_affine, logits.shape[1:], dst_affine, dst_shape, (k0, k1), logits.device)
        sampled = F.grid_sample(source.unsqueeze(0), grid, mode="bilinear", padding_mode="border",
                                align_corners=True)[0]
        out[:, :, k0:k1] = argmax_labels(sampled)
    return out
