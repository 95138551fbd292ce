"""MONAI preprocessing shared by training and inference.

Orientation to RAS, optional resampling to the target spacing (image bilinear, label nearest),
intensity clipping and rescaling to [0, 1] (:func:`intensity_transform`), then a patch of
``config.patch_size``: padded with zeros where the scan is smaller and cut out where it is
larger, at the scan's centre (``patch_sampling: center``), at the centre of the annotation
(``label_center``), around a random annotated voxel (``label``) or anywhere (``random``).

:func:`preprocess_case` produces the whole preprocessed volume (what the disk cache holds) with
the geometry needed to map a prediction back onto the scan's own grid
(:func:`resample_to_reference`); :func:`sample_patch` cuts the patch. :func:`training_transforms`
chains the two for the centre patch as one MONAI ``Compose`` over ``{"image", "label"}``.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor

from HyperSORTLib.config import DataConfig
from HyperSORTLib.data.cases import CaseList, CaseRecord
from HyperSORTLib.data.labels import affines_match, label_dtype, load_label
from HyperSORTLib.utils.nifti import open_nifti

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))

#: Foreground voxels remembered per class for label-centred patches.
FOREGROUND_SAMPLES_PER_CLASS = 2048


def intensity_transform(config: DataConfig, keys: tuple[str, ...] = ("image",)) -> mt.MapTransform:
    """Clip and rescale intensities to [0, 1] as ``config.intensity`` says."""
    if config.intensity == "window":
        lo, hi = config.window
        return mt.ScaleIntensityRanged(keys, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    lo, hi = config.percentiles
    return mt.ScaleIntensityRangePercentilesd(keys, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True)


@functools.lru_cache(maxsize=1)
def nifti_loader() -> mt.LoadImage:
    """MONAI's ``LoadImage`` with nibabel's reader, built once per process.

    ``LoadImage`` always builds MONAI's whole reader list as well, and its GPU DICOM reader logs
    a warning when nvImageCodec is absent; the files read here are NIfTI (checked by
    :func:`~HyperSORTLib.utils.nifti.open_nifti`), so that warning is noise and is held back.
    """
    quiet = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            return mt.LoadImage(reader="NibabelReader", image_only=True)
    finally:
        quiet.setLevel(level)


class LoadFilesd(mt.MapTransform):
    """Load the keys that hold file paths with MONAI's ``LoadImage`` (after the header check of
    :func:`~HyperSORTLib.utils.nifti.open_nifti`); pass loaded arrays through.

    A label already read by :func:`~HyperSORTLib.data.labels.load_label` (a ``MetaTensor``
    carrying its affine, see :func:`label_metatensor`) is kept as it is, so label selection and
    per-class masks need no second reader.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(keys)
        self.loader = nifti_loader()

    def __call__(self, data: dict) -> dict:
        out = dict(data)
        for key in self.key_iterator(out):
            value = out[key]
            if isinstance(value, (str, os.PathLike)):
                open_nifti(value, key)  # a file smaller than its header declares is refused unread
                out[key] = self.loader(value)
            elif not isinstance(value, MetaTensor):
                raise TypeError(f"'{key}' must be a file path or a MetaTensor with an affine, found {type(value)}.")
        return out


def label_metatensor(labels: np.ndarray, image: Any, affine: np.ndarray | None = None) -> MetaTensor:
    """Class indices from :func:`load_label` as a channel-less MetaTensor on the label file's grid
    (or on ``affine`` when given)."""
    affine = np.asarray(image.affine if affine is None else affine, dtype=np.float64)
    meta = {"affine": torch.as_tensor(affine), "original_affine": affine.copy(),
            "spatial_shape": np.asarray(labels.shape), "original_channel_dim": float("nan"), "space": "RAS",
            "filename_or_obj": str(getattr(image, "get_filename", lambda: "")() or "")}
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(labels)), meta=meta)


def volume_transforms(config: DataConfig, keys: tuple[str, ...] = ("image", "label")) -> mt.Compose:
    """``{"image", "label"}`` (paths or MetaTensors) -> whole preprocessed volumes [1, X, Y, Z] in RAS."""
    steps: list = [
        LoadFilesd(keys),
        mt.EnsureChannelFirstd(keys),
        mt.Orientationd(keys, axcodes="RAS", labels=RAS_LABELS),
    ]
    if config.spacing is not None:
        modes = tuple("nearest" if k == "label" else "bilinear" for k in keys)
        steps.append(mt.Spacingd(keys, pixdim=config.spacing, mode=modes))
    steps.append(intensity_transform(config))
    return mt.Compose(steps)


def training_transforms(config: DataConfig) -> mt.Compose:
    """``{"image", "label"}`` (paths or MetaTensors) -> the centre patch [1, *patch_size].

    The image is float, the label keeps its type (float for a label file path, as MONAI
    reads it; the integer type of a :func:`label_metatensor`).
    """
    keys = ("image", "label")
    return mt.Compose([
        *volume_transforms(config, keys).transforms,
        mt.SpatialPadd(keys, spatial_size=config.patch_size),
        mt.CenterSpatialCropd(keys, roi_size=config.patch_size),
        mt.EnsureTyped(keys, dtype=None, track_meta=False),
    ])


# ------------------------------------------------------------------------------ whole volumes
@dataclass
class PreprocessedCase:
    """A case after orientation, resampling and intensity scaling, before patch sampling.

    Attributes:
        image: float32 [X, Y, Z], intensities in [0, 1].
        label: class indices [X, Y, Z] (uint8, uint16 beyond 256 classes).
        affine: voxel -> RAS mm of the preprocessed grid.
        original_affine: voxel -> RAS mm of the scan file (nibabel convention).
        original_shape: the scan file's 3D shape.
        foreground: int32 [N, 4] rows ``(class, x, y, z)``, up to
            :data:`FOREGROUND_SAMPLES_PER_CLASS` annotated voxels per class, for label-centred patches.
        foreground_box: the annotation's bounding box ``((x0, y0, z0), (x1, y1, z1))``, inclusive,
            or ``None`` for an empty label.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    foreground: np.ndarray
    foreground_box: tuple[tuple[int, ...], tuple[int, ...]] | None = None


def bounding_box(label: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Inclusive bounding box of the non-zero voxels, or ``None``."""
    low, high = [], []
    for axis in range(label.ndim):
        present = np.flatnonzero(label.any(axis=tuple(a for a in range(label.ndim) if a != axis)))
        if present.size == 0:
            return None
        low.append(int(present[0]))
        high.append(int(present[-1]))
    return tuple(low), tuple(high)


def foreground_samples(label: np.ndarray, per_class: int = FOREGROUND_SAMPLES_PER_CLASS) -> np.ndarray:
    """Up to ``per_class`` annotated voxels of every class, as rows ``(class, x, y, z)``.

    The choice is a fixed function of the label map (seeded), so the cache is reproducible.
    """
    flat = label.reshape(-1)
    nonzero = np.flatnonzero(flat)
    if nonzero.size == 0:
        return np.zeros((0, 4), np.int32)
    classes = flat[nonzero]
    order = np.argsort(classes, kind="stable")
    nonzero, classes = nonzero[order], classes[order]
    values, starts, counts = np.unique(classes, return_index=True, return_counts=True)
    rng = np.random.default_rng(0)
    rows = []
    for value, start, count in zip(values, starts, counts):
        pick = nonzero[start:start + count]
        if count > per_class:
            pick = np.sort(rng.choice(pick, per_class, replace=False))
        coords = np.stack(np.unravel_index(pick, label.shape), axis=1)
        rows.append(np.column_stack([np.full(len(pick), value), coords]))
    return np.concatenate(rows).astype(np.int32)


def load_case(case: CaseRecord, case_list: CaseList) -> dict[str, Any]:
    """``{"image": path, "label": MetaTensor}`` for :func:`volume_transforms` / :func:`training_transforms`.

    A label whose grid matches the image's within 1 % of a voxel (header rounding) takes the
    image's affine, so both resample onto exactly the same grid.
    """
    labels, label_image = load_label(case, case_list)
    item = label_metatensor(labels, label_image)
    # the header check refuses an image smaller than its header declares before MONAI reads it
    header = open_nifti(case.image, f"Case '{case.case_id}': image")
    if tuple(header.shape[:3]) == labels.shape:
        affine = np.asarray(header.affine, np.float64)
        if affines_match(affine, np.asarray(label_image.affine), header.header.get_zooms()[:3]):
            item = label_metatensor(labels, label_image, affine)
    return {"image": str(case.image), "label": item}


def preprocess_case(case: CaseRecord, case_list: CaseList, config: DataConfig,
                    transform: mt.Compose | None = None) -> PreprocessedCase:
    """Read and preprocess one case to the whole volume (no patch); errors propagate.

    Raises:
        ValueError: image and label grids differ after preprocessing, or the image holds NaN/inf.
    """
    item = load_case(case, case_list)
    original_affine = item["label"].meta["original_affine"]
    original_shape = tuple(int(s) for s in item["label"].shape)
    out = (transform or volume_transforms(config))(item)
    image, label = out["image"], out["label"]
    if tuple(image.shape) != tuple(label.shape):
        raise ValueError(f"image {case.image} {tuple(image.shape[1:])} and its annotation "
                         f"{tuple(label.shape[1:])} have different grids after preprocessing "
                         f"(their shapes or affines differ).")
    image_np = image.detach().cpu().numpy()[0].astype(np.float32, copy=False)
    if not np.isfinite(image_np).all():
        raise ValueError(f"image {case.image} contains NaN or infinite values.")
    dtype = label_dtype(len(case_list.class_names))
    label_np = np.rint(label.detach().cpu().numpy()[0]).astype(dtype)
    affine = np.asarray(image.affine, dtype=np.float64)
    return PreprocessedCase(np.ascontiguousarray(image_np), np.ascontiguousarray(label_np), affine,
                            np.asarray(original_affine, np.float64), original_shape,
                            foreground_samples(label_np), bounding_box(label_np))


# ------------------------------------------------------------------------------ patches
PATCH_SAMPLING = ("center", "label_center", "label", "random")


def _centred_on(centre: Sequence[int], shape: Sequence[int], patch_size: Sequence[int]) -> tuple[int, ...]:
    padded = [max(s, p) for s, p in zip(shape, patch_size)]
    before = [(q - s) // 2 for q, s in zip(padded, shape)]
    return tuple(int(np.clip(c + b - p // 2, 0, q - p)) for c, b, p, q in zip(centre, before, patch_size, padded))


def patch_start(shape: Sequence[int], patch_size: Sequence[int], mode: str, rng: np.random.Generator | None,
                foreground: np.ndarray | None = None, foreground_probability: float = 1.0,
                foreground_box: Any = None) -> tuple[int, ...]:
    """Start of the patch in the zero-padded volume (padded to at least ``patch_size``, symmetrically).

    ``center`` matches MONAI's ``SpatialPad`` + ``CenterSpatialCrop``; ``label_center`` centres
    the patch on the annotation's bounding box (``foreground_box``; the scan's centre when the
    label is empty); ``label`` centres it on an annotated voxel (a class drawn uniformly among
    those present, then one of its voxels), with probability ``foreground_probability`` (else, or
    without foreground, as ``random``); ``random`` draws the start uniformly. A patch never
    reaches beyond the padded volume.
    """
    padded = [max(s, p) for s, p in zip(shape, patch_size)]
    if mode == "center" or (mode == "label_center" and foreground_box is None):
        return tuple(max(q // 2 - p // 2, 0) for q, p in zip(padded, patch_size))
    if mode == "label_center":
        low, high = foreground_box
        return _centred_on([(a + b + 1) // 2 for a, b in zip(low, high)], shape, patch_size)
    if rng is None:
        raise ValueError(f"patch sampling '{mode}' needs a random generator.")
    if mode == "label" and foreground is not None and len(foreground) and rng.random() < foreground_probability:
        classes = np.unique(foreground[:, 0])
        chosen = classes[rng.integers(len(classes))]
        rows = foreground[foreground[:, 0] == chosen]
        return _centred_on(rows[rng.integers(len(rows)), 1:], shape, patch_size)
    if mode not in PATCH_SAMPLING:
        raise ValueError(f"Unknown patch sampling {mode!r}; expected one of {', '.join(PATCH_SAMPLING)}.")
    return tuple(int(rng.integers(q - p + 1)) for q, p in zip(padded, patch_size))


def extract_patch(volume: np.ndarray, start: Sequence[int], patch_size: Sequence[int]) -> np.ndarray:
    """The window ``start:start+patch_size`` of ``volume`` zero-padded symmetrically to ``patch_size``.

    Reads only the window (``volume`` may be a memory map).
    """
    shape = volume.shape
    out = np.zeros(tuple(patch_size), volume.dtype)
    src, dst = [], []
    for s, t, p in zip(shape, start, patch_size):
        before = (max(s, p) - s) // 2
        lo_src = t - before
        lo, hi = max(lo_src, 0), min(lo_src + p, s)
        src.append(slice(lo, hi))
        dst.append(slice(lo - lo_src, hi - lo_src))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def patch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of the patch of case ``index`` in ``epoch``: a function of the three only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def needs_patch_rng(config: DataConfig) -> bool:
    """Whether cutting a training patch draws random numbers (random placement, scale or noise augmentation)."""
    return (config.patch_sampling in ("label", "random") or config.scale_augmentation > 0
            or config.noise_augmentation > 0)


def sample_patch(image: np.ndarray, label: np.ndarray, config: DataConfig, rng: np.random.Generator | None,
                 foreground: np.ndarray | None = None,
                 foreground_box: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut the patch of ``config.patch_size`` with ``config.patch_sampling`` from a whole volume.

    With ``config.scale_augmentation`` = s > 0, each axis draws a zoom factor f uniformly in
    [1 - s, 1 + s] (from ``rng``, before the placement): a window of ``patch_size / f`` voxels is
    cut with the same placement rule and resized to ``patch_size`` with MONAI's ``Resize``
    (image trilinear, label nearest on the same voxel centres), so the anatomy appears f times
    its size while the patch keeps its shape. The image is interpolated in float64 and rounded to
    float32: torch's float32 trilinear kernels round differently from one release to the next, and
    training amplifies a last-bit difference into another latent map. With
    ``config.noise_augmentation`` = sigma > 0, MONAI's ``RandGaussianNoise`` (standard deviation
    sigma, seeded from ``rng`` after the zoom and the placement) is added to the image patch.
    """
    size = tuple(int(p) for p in config.patch_size)
    window = size
    if config.scale_augmentation > 0:
        if rng is None:
            raise ValueError("scale augmentation needs a random generator.")
        s = config.scale_augmentation
        factors = rng.uniform(1.0 - s, 1.0 + s, size=len(size))
        window = tuple(max(1, int(round(p / f))) for p, f in zip(size, factors))
    start = patch_start(image.shape, window, config.patch_sampling, rng, foreground,
                        config.foreground_probability, foreground_box)
    image_patch, label_patch = extract_patch(image, start, window), extract_patch(label, start, window)
    if window != size:
        zoomed = mt.Resize(size, mode="trilinear", align_corners=False, dtype=torch.float64)(
            torch.from_numpy(image_patch.astype(np.float64))[None])
        labels = mt.Resize(size, mode="nearest-exact")(torch.from_numpy(label_patch.astype(np.float32))[None])
        image_patch = np.asarray(zoomed[0], dtype=np.float32)
        label_patch = np.rint(np.asarray(labels[0])).astype(label_patch.dtype)
    if config.noise_augmentation > 0:
        if rng is None:
            raise ValueError("noise augmentation needs a random generator.")
        noise = mt.RandGaussianNoise(prob=1.0, std=float(config.noise_augmentation), sample_std=False)
        noise.set_random_state(seed=int(rng.integers(2**31)))
        image_patch = np.asarray(noise(image_patch[None]), dtype=np.float32)[0]
    return image_patch, label_patch


# ------------------------------------------------------------------------------ back to the scan
def resample_to_reference(array: np.ndarray | torch.Tensor, affine: np.ndarray, reference: Any,
                          mode: str = "nearest") -> nib.Nifti1Image:
    """Resample a volume on a preprocessed grid onto the grid of the original scan.

    Args:
        array: [X, Y, Z] (or [C, X, Y, Z]) on the grid ``affine`` (e.g. a predicted label map
            on the preprocessed grid, :attr:`PreprocessedCase.affine`).
        affine: its voxel -> RAS mm matrix.
        reference: the original scan: a nibabel image or a path; the result has exactly its
            shape and affine.
        mode: ``"nearest"`` for label maps, ``"bilinear"`` for probabilities. (Class scores
            become labels on the scan's grid through
            :func:`HyperSORTLib.inference.geometry.logits_to_labels`, which interpolates the
            scores before the arg-max.)

    Returns:
        A NIfTI image with the reference's 3D shape and affine (label maps keep an integer type).
    """
    if not isinstance(reference, nib.spatialimages.SpatialImage):
        reference = open_nifti(reference, "reference scan")
    data = torch.as_tensor(np.asarray(array))
    channel = data.ndim == 4
    source = MetaTensor(data if channel else data[None], affine=torch.as_tensor(np.asarray(affine, np.float64)))
    ref_affine = np.asarray(reference.affine, np.float64)
    ref_shape = tuple(int(s) for s in reference.shape[:3])
    out = mt.SpatialResample(mode=mode, padding_mode="zeros", dtype=torch.float64)(
        source.to(torch.float64), dst_affine=torch.as_tensor(ref_affine), spatial_size=ref_shape)
    result = out.detach().cpu().numpy()
    if not channel:
        result = result[0]
    else:
        result = np.moveaxis(result, 0, -1)
    if mode == "nearest" and not np.issubdtype(np.asarray(array).dtype, np.floating):
        result = np.rint(result).astype(np.asarray(array).dtype)
    else:
        result = result.astype(np.float32)
    header = reference.header.copy() if isinstance(reference, nib.Nifti1Image) else None
    image = nib.Nifti1Image(result, ref_affine, header)
    image.set_data_dtype(result.dtype)
    return image
