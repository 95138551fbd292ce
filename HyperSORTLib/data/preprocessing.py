"""MONAI preprocessing shared by training and inference.

Orientation to RAS, optional resampling to the target spacing (image linear, label nearest),
intensity clipping and rescaling to [0, 1], then a centre crop / pad to the patch size.
"""

from __future__ import annotations

from monai import transforms as mt

from HyperSORTLib.config import DataConfig


def intensity_transform(config: DataConfig, keys: tuple[str, ...] = ("image",)) -> mt.MapTransform:
    """Clip and rescale intensities to [0, 1] as ``config.intensity`` says."""
    if config.intensity == "window":
        lo, hi = config.window
        return mt.ScaleIntensityRanged(keys, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    lo, hi = config.percentiles
    return mt.ScaleIntensityRangePercentilesd(keys, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True)


def training_transforms(config: DataConfig) -> mt.Compose:
    """File paths ``{"image", "label"}`` -> tensors [1, *patch_size] (float image, int label)."""
    keys = ("image", "label")
    steps: list = [
        mt.LoadImaged(keys, image_only=False),
        mt.EnsureChannelFirstd(keys),
        mt.Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if config.spacing is not None:
        steps.append(mt.Spacingd(keys, pixdim=config.spacing, mode=("bilinear", "nearest")))
    steps += [
        intensity_transform(config),
        mt.SpatialPadd(keys, spatial_size=config.patch_size),
        mt.CenterSpatialCropd(keys, roi_size=config.patch_size),
        mt.EnsureTyped(keys, dtype=None, track_meta=False),
    ]
    return mt.Compose(steps)
