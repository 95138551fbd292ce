"""Label-map perturbations that simulate annotation biases and errors, and label comparisons."""

from HyperSORTLib.perturbation.label_ops import (
    PERTURBATIONS,
    class_volumes_ml,
    dice_per_class,
    dilate_class,
    elastic_deform,
    merge_classes,
    omit_class,
    remove_slices,
    swap_classes,
    translate_label,
    volume_change,
)

__all__ = [
    "PERTURBATIONS",
    "class_volumes_ml",
    "dice_per_class",
    "dilate_class",
    "elastic_deform",
    "merge_classes",
    "omit_class",
    "remove_slices",
    "swap_classes",
    "translate_label",
    "volume_change",
]
