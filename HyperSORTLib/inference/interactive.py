"""Interactive segmentation: one loaded run, one cached scan, any number of latent points.

This is the API behind the Slicer module and ``hypersort segment``. Loading the run and
preprocessing the scan happen once; every new latent point then costs one hyper-network pass
(generating the UNet's weights) and one UNet pass, plus the resampling of the result onto the
grid the caller wants. The UNet runs only over the box that holds the patient (the air around
it is background), in inference mode, with batched sliding windows, in the memory layout fastest
on the device and in its 16-bit type (on CPU for previews only, so that full-resolution labels
are the float32 ones); decoded UNets and finished label maps of recent latent points are kept,
so returning to a point costs nothing.

Example:
    >>> seg = InteractiveSegmenter.load("runs/amos")  # doctest: +SKIP
    >>> seg.set_volume(ct_array, ct_affine, key="ct-1")  # [I, J, K] HU + voxel->RAS  # doctest: +SKIP
    >>> quick = seg.segment(seg.main_mode(), preview=True)  # coarse grid, fast  # doctest: +SKIP
    >>> full = seg.segment(seg.latent_of("amos_0005"))  # exactly the input grid  # doctest: +SKIP
    >>> full.array.shape == ct_array.shape and np.allclose(full.affine, ct_affine)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from HyperSORTLib import rundir
from HyperSORTLib.data.labels import argmax_labels
from HyperSORTLib.device import autocast_dtype
from HyperSORTLib.inference.decode import TrainedRun
from HyperSORTLib.inference.geometry import (PreparedVolume, box_on_grid, check_grid, check_spacing, coarser_spacing,
                                             logits_to_labels, prepare_volume, shifted_affine)
from HyperSORTLib.rundir import ClusterInfo


@dataclass(frozen=True)
class LabelVolume:
    """A label map with its geometry: ``array`` [I, J, K] class indices, ``affine`` voxel -> RAS mm."""

    array: np.ndarray
    affine: np.ndarray


def read_clusters(run_dir: str | Path, latents: np.ndarray, weights_sha256: str | None = None,
                  strict: bool = False) -> list[ClusterInfo]:
    """The clusters of a run: ``analysis/clusters.csv`` when ``hypersort analyze`` wrote it for
    these weights (``weights_sha256``, default the current ``model.safetensors``), otherwise a
    Gaussian mixture (components chosen by BIC) fitted to the latent table now.

    A stale analysis (made from other weights, e.g. before training continued) is never paired
    with these weights: with ``strict`` it is a :class:`RunDirectoryError`, otherwise a
    :class:`StaleAnalysisWarning` and the clusters of the current latents.
    """
    latents = np.asarray(latents, dtype=np.float64)
    path = rundir.analysis_dir(run_dir) / rundir.CLUSTERS_FILE
    if path.is_file():
        stale = rundir.stale_analysis_reason(run_dir, weights_sha256)
        if stale is None:
            clusters = rundir.read_clusters_table(path, latents.shape[1])
            if clusters:
                return clusters
        elif strict:
            raise rundir.RunDirectoryError(stale)
        else:
            warnings.warn(f"{stale} Using clusters of the current latent table instead.", StaleAnalysisWarning,
                          stacklevel=2)
    if len(latents) < 3 or not np.ptp(latents, axis=0).any():  # too few, or one point (a baseline's table)
        return [ClusterInfo(0, len(latents), latents.mean(0).astype(np.float32), True)]
    from HyperSORTLib.latentmap.clusters import cluster_latents

    result = cluster_latents(latents, max_components=min(8, len(latents) - 1))
    return [ClusterInfo(k, int(result.sizes[k]), result.centers[k].astype(np.float32), k == result.main_cluster)
            for k in range(result.n_clusters)]


class StaleAnalysisWarning(UserWarning):
    """``RUN_DIR/analysis`` describes other weights than the loaded ones and is not used."""


class InteractiveSegmenter:
    """Segment one scan from any latent point of a trained run, fast enough to follow a pointer.

    Args:
        run: a loaded :class:`TrainedRun`.
        preview_factor: the preview grid is this many times coarser than the training spacing.
        max_cached_unets: decoded UNets kept for re-use (clicking back and forth costs nothing).
        max_cached_results: finished label maps kept for re-use, per latent point and grid.
        crop_to_body: run the UNet only over the box of the preprocessed grid that holds the
            patient (:func:`~HyperSORTLib.inference.geometry.body_box`); outside it the labels
            are background. ``False`` runs it over the whole grid.
        sw_batch_size: sliding windows per UNet call; ``None``: 4 on CUDA, 1 on CPU (where
            batching gains nothing and costs memory).
        channels_last: run the UNet in the ``channels_last_3d`` layout; ``None``: on CPU only,
            where oneDNN convolves about twice as fast in it.
        mixed_precision: run the UNet under autocast in the device's native 16-bit type
            (:func:`~HyperSORTLib.device.autocast_dtype`: CUDA GPUs, and CPUs with bfloat16
            instructions, where it is 2.5-3x faster; a device without one runs float32): ``True``
            for every segmentation, ``False`` for none (exactly the float32 labels). ``None``: every
            one on CUDA; on CPU the previews only, so that full-resolution labels (``Accept``,
            ``hypersort segment``) stay the float32 ones (bfloat16 changes 0.01-0.05 % of the
            voxels at full resolution, up to 0.4 % on a coarse preview grid, which can be a large
            part of a structure only a few voxels big).
        single_pass_voxels: run a (cropped) volume of at most this many voxels in one UNet pass
            instead of sliding windows (see :meth:`TrainedRun.predict_logits`: faster, slightly
            different labels); 0: windows as in training.
    """

    def __init__(self, run: TrainedRun, preview_factor: float = 2.0, max_cached_unets: int = 8,
                 max_cached_results: int = 8, crop_to_body: bool = True, sw_batch_size: int | None = None,
                 channels_last: bool | None = None, mixed_precision: bool | None = None,
                 single_pass_voxels: int = 0) -> None:
        self.run = run
        self.preview_factor = float(preview_factor)
        self._preview_spacing: tuple[float, float, float] | None = None
        self._max_unets = int(max_cached_unets)
        self._unets: OrderedDict[tuple, torch.nn.Module] = OrderedDict()
        self._max_results = int(max_cached_results)
        self._results: OrderedDict[tuple, LabelVolume] = OrderedDict()
        cuda = run.device.type == "cuda"
        self.crop_to_body = bool(crop_to_body)
        self.sw_batch_size = int(sw_batch_size if sw_batch_size is not None else (4 if cuda else 1))
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, found {sw_batch_size}.")
        self.channels_last = (not cuda) if channels_last is None else bool(channels_last)
        self.mixed_precision = None if mixed_precision is None else bool(mixed_precision)
        self.single_pass_voxels = int(single_pass_voxels)
        if self.single_pass_voxels < 0:
            raise ValueError(f"single_pass_voxels must be >= 0, found {single_pass_voxels}.")
        self._volume_key: object = None
        self._input: tuple[np.ndarray, np.ndarray] | None = None
        self._prepared: dict[str, PreparedVolume] = {}
        self._clusters: list[ClusterInfo] | None = None
        self.timings: dict[str, float] = {}
        #: Whether the last :meth:`segment` returned a label map kept from an earlier call.
        self.reused = False

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", **kwargs) -> "InteractiveSegmenter":
        """Load a run directory (errors name the file at fault)."""
        return cls(TrainedRun.load(run_dir, device=device), **kwargs)

    # ------------------------------------------------------------------ the run
    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def case_ids(self) -> tuple[str, ...]:
        return self.run.case_ids

    @property
    def latents(self) -> np.ndarray:
        return self.run.latents

    @property
    def latent_dim(self) -> int:
        return self.run.latent_dim

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.run.class_names

    def uses_mixed_precision(self, preview: bool) -> bool:
        """Whether a segmentation (a preview or not) runs the UNet under autocast (see ``mixed_precision``)."""
        if self.mixed_precision is not None:
            return self.mixed_precision
        return preview or self.device.type == "cuda"

    def precision(self, preview: bool) -> str:
        """What the UNet computes a segmentation in: ``"float32"``, or the 16-bit type of its autocast."""
        dtype = autocast_dtype(self.device) if self.uses_mixed_precision(preview) else None
        return str(dtype or torch.float32).removeprefix("torch.")

    def latent_of(self, case_id: str) -> np.ndarray:
        if case_id not in self.case_ids:
            raise ValueError(f"'{case_id}' is not a training case of {self.run_dir}; "
                             f"its cases are {', '.join(self.case_ids[:5])}{', ...' if len(self.case_ids) > 5 else ''}.")
        return self.run.latent_of(case_id)

    @property
    def analysis_warning(self) -> str | None:
        """Why ``analysis/`` is not used with the loaded weights (it describes other weights), or ``None``."""
        return rundir.stale_analysis_reason(self.run_dir, self.run.weights_sha256 or None)

    def clusters(self) -> list[ClusterInfo]:
        """The clusters of the latent map: from ``analysis/clusters.csv`` when it describes the
        loaded weights, else fitted to the latent table now (with a :class:`StaleAnalysisWarning`)."""
        if self._clusters is None:
            self._clusters = read_clusters(self.run_dir, self.latents, self.run.weights_sha256 or None)
        return self._clusters

    def cluster_centre(self, cluster: int) -> np.ndarray:
        """Centre of a cluster of ``analysis/clusters.csv``; a stale analysis is a :class:`RunDirectoryError`."""
        stale = self.analysis_warning
        if stale is not None:
            raise rundir.RunDirectoryError(stale)
        for info in self.clusters():
            if info.cluster == int(cluster):
                return info.centre.copy()
        raise ValueError(f"Cluster {cluster} does not exist in {self.run_dir}; the clusters are "
                         f"{[c.cluster for c in self.clusters()]}.")

    def main_mode(self) -> np.ndarray:
        """Centre of the heaviest cluster: the dataset's majority annotation style."""
        return next(c.centre.copy() for c in self.clusters() if c.is_main_mode)

    def sample_table(self) -> dict[str, list[str]] | None:
        """Columns of ``analysis/samples.csv`` (scores, clusters, ranks) when present and made
        from the loaded weights (see :attr:`analysis_warning`)."""
        path = rundir.analysis_dir(self.run_dir) / rundir.SAMPLES_FILE
        if not path.is_file() or self.analysis_warning is not None:
            return None
        return rundir.read_samples_table(path)

    # ------------------------------------------------------------------ the scan
    @property
    def preview_spacing(self) -> tuple[float, float, float] | None:
        """Spacing (mm) of the preview grid; by default ``preview_factor`` x the training spacing."""
        if self._preview_spacing is not None:
            return self._preview_spacing
        if self._input is None:
            return None
        return coarser_spacing(self.run.config.data, self._input[1], self.preview_factor)

    @preview_spacing.setter
    def preview_spacing(self, value: float | Sequence[float] | None) -> None:
        """Raises :class:`ScanError` for a spacing outside ``SPACING_RANGE_MM``, or one that would
        resample the current scan to more than ``MAX_GRID_VOXELS`` voxels."""
        if value is None:
            spacing = None
        else:
            spacing = check_spacing(value, "preview spacing")
            if self._input is not None:
                check_grid(self._input[0].shape, self._input[1], spacing, "scan", "preview spacing")
        if spacing != self._preview_spacing:
            self._preview_spacing = spacing
            self._prepared.pop("preview", None)
            self._results.clear()

    def set_volume(self, array: np.ndarray, affine: np.ndarray, key: object = None) -> None:
        """Use this scan from now on: ``array`` [I, J, K] intensities, ``affine`` voxel -> RAS mm.

        Preprocessing runs lazily on the first segmentation and is cached; passing the same
        non-None ``key`` again (e.g. a volume node id with its modification time) keeps the cache.
        """
        from HyperSORTLib.inference.geometry import check_scan

        if key is not None and key == self._volume_key and self._input is not None:
            return
        array, affine = check_scan(array, affine, name=str(key) if key is not None else "scan")
        self._input = (array, affine)
        self._volume_key = key
        self._prepared.clear()
        self._results.clear()

    def _prepared_volume(self, preview: bool) -> PreparedVolume:
        if self._input is None:
            raise ValueError("No scan is set: call set_volume(array, affine) first.")
        which = "preview" if preview else "full"
        if which not in self._prepared:
            spacing = self.preview_spacing if preview else None
            self._prepared[which] = prepare_volume(*self._input, self.run.config.data, spacing=spacing)
        return self._prepared[which]

    # ------------------------------------------------------------------ segmenting
    def _latent_key(self, z: Sequence[float] | np.ndarray) -> tuple[float, ...]:
        z = np.asarray(z, dtype=np.float32).reshape(-1)
        if z.shape != (self.latent_dim,):
            raise ValueError(f"This run's latent space has {self.latent_dim} dimensions; the latent point given "
                             f"has {z.size} coordinates.")
        if not np.isfinite(z).all():
            raise ValueError(f"The latent point {z.tolist()} has non-finite coordinates.")
        return tuple(float(v) for v in z)

    def _unet(self, z: Sequence[float] | np.ndarray) -> torch.nn.Module:
        key = self._latent_key(z)
        z = np.asarray(key, dtype=np.float32)
        if key in self._unets:
            self._unets.move_to_end(key)
            return self._unets[key]
        unet = self.run.decode(z)
        self._unets[key] = unet
        while len(self._unets) > self._max_unets:
            self._unets.popitem(last=False)
        return unet

    def segment(self, z: Sequence[float] | np.ndarray, preview: bool = False,
                progress: Callable[[float], None] | None = None,
                cancel: Callable[[], bool] | None = None, to_input_grid: bool | None = None) -> LabelVolume:
        """Segment the current scan as the annotation style at latent point ``z``.

        Args:
            z: a latent point (``latent_dim`` numbers): a sample's latent, a cluster centre, any point.
            preview: segment on the coarser preview grid.
            to_input_grid: resample the labels onto the input grid; by default only full-resolution
                results are (a preview stays on its coarse grid, with that grid's affine).
            progress: called with the finished fraction of the UNet pass in [0, 1].
            cancel: polled between windows and slabs; returning True raises :class:`InterruptedError`.

        Returns:
            Labels (a new array, the caller's to change); on the input grid they have exactly the
            input's shape and affine.
        """
        t0 = time.perf_counter()
        if to_input_grid is None:
            to_input_grid = not preview
        key = (self._latent_key(z), bool(preview), bool(to_input_grid))
        if key in self._results:
            self._results.move_to_end(key)
            cached = self._results[key]
            if progress is not None:
                progress(1.0)
            self.timings = {"hypernetwork": 0.0, "preprocess": 0.0, "unet": 0.0, "resample": 0.0,
                            "total": time.perf_counter() - t0}
            self.reused = True
            return LabelVolume(cached.array.copy(), cached.affine.copy())
        unet = self._unet(z)
        t1 = time.perf_counter()
        volume = self._prepared_volume(preview)
        grid = tuple(volume.image.shape[1:])
        box = volume.body if self.crop_to_body and volume.body is not None else tuple(slice(0, n) for n in grid)
        t2 = time.perf_counter()
        logits = self.run.predict_logits(volume.image[(slice(None), *box)][None], unet, progress=progress,
                                         cancel=cancel, sw_batch_size=self.sw_batch_size,
                                         channels_last=self.channels_last,
                                         mixed_precision=self.uses_mixed_precision(preview),
                                         single_pass_voxels=self.single_pass_voxels)[0]
        t3 = time.perf_counter()
        cropped = tuple(logits.shape[1:]) != grid
        if not to_input_grid:
            labels = argmax_labels(logits)
            if cropped:
                labels = _paste(labels, box, grid)
            result = LabelVolume(labels, volume.affine.copy())
        else:
            target = box_on_grid(box, volume.affine, volume.input_affine, volume.input_shape) if cropped else None
            if target is not None:  # axis-aligned grids: resample the box alone, background around it
                inside = logits_to_labels(logits, shifted_affine(volume.affine, box),
                                          shifted_affine(volume.input_affine, target),
                                          [t.stop - t.start for t in target], cancel=cancel)
                labels = _paste(inside, target, volume.input_shape)
            else:
                if cropped:  # oblique grids: the box's scores in a background grid
                    logits = _background_around(logits, box, grid)
                labels = logits_to_labels(logits, volume.affine, volume.input_affine, volume.input_shape,
                                          cancel=cancel)
            result = LabelVolume(labels, volume.input_affine.copy())
        t4 = time.perf_counter()
        self._results[key] = LabelVolume(result.array.copy(), result.affine.copy())
        while len(self._results) > self._max_results:
            self._results.popitem(last=False)
        self.timings = {"hypernetwork": t1 - t0, "preprocess": t2 - t1, "unet": t3 - t2, "resample": t4 - t3,
                        "total": t4 - t0}
        self.reused = False
        return result

    # ------------------------------------------------------------------ memory
    def clear_cache(self) -> None:
        """Forget the preprocessed scan, the decoded UNets and the label maps (the scan must be set again)."""
        self._unets.clear()
        self._results.clear()
        self._prepared.clear()
        self._input = None
        self._volume_key = None

    def release(self) -> None:
        """:meth:`clear_cache` and hand cached GPU memory back to the driver."""
        self.clear_cache()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


#: Score of the foreground classes outside the body box: far below any logit, finite so that
#: trilinear interpolation across the box's edge stays finite.
_OUTSIDE_SCORE = -1e4


def _paste(labels: np.ndarray, box: tuple[slice, ...], grid: Sequence[int]) -> np.ndarray:
    """Labels of the box placed in a background grid of shape ``grid``."""
    out = np.zeros(tuple(grid), dtype=labels.dtype)
    out[box] = labels
    return out


def _background_around(logits: torch.Tensor, box: tuple[slice, ...], grid: tuple[int, ...]) -> torch.Tensor:
    """Scores [K, *grid] holding ``logits`` in ``box`` and background everywhere else."""
    full = torch.full((logits.shape[0], *grid), _OUTSIDE_SCORE, dtype=torch.float32, device=logits.device)
    full[0] = 0.0
    full[(slice(None), *box)] = logits.float()
    return full
