"""Label-map perturbations that simulate annotation biases and errors, plans that apply them to a
dataset, and label comparisons.

Modules: :mod:`~HyperSORTLib.perturbation.label_ops` (class edits, dilation, translation,
elastic deformation, missing slices, Dice/volume), :mod:`~HyperSORTLib.perturbation.class_ops`
(erosion, moved structures and borders, neighbours drawn into an organ),
:mod:`~HyperSORTLib.perturbation.case_ops` (another case's label, empty label),
:mod:`~HyperSORTLib.perturbation.deformation` (B-spline and Gaussian-random-field warps),
:mod:`~HyperSORTLib.perturbation.marginal` (closed-form noise marginals, the soft-Dice
threshold), :mod:`~HyperSORTLib.perturbation.registry` (every perturbation by name),
:mod:`~HyperSORTLib.perturbation.plan` and :mod:`~HyperSORTLib.perturbation.values` (YAML plans,
their parameter ranges and per-case draws), :mod:`~HyperSORTLib.perturbation.runner` (a
perturbed copy of a dataset with its manifest) and :mod:`~HyperSORTLib.perturbation.dataset_io`
(where each file of the copy goes and how it is written).
"""

from HyperSORTLib.metrics import class_volumes_ml, dice_per_class, volume_change  # re-exported for plan authors
from HyperSORTLib.perturbation.case_ops import empty_label, replace_label
from HyperSORTLib.perturbation.class_ops import annotate_neighbour, erode_class, shift_boundary, shift_class
from HyperSORTLib.perturbation.deformation import gaussian_field_deform, gaussian_random_field
from HyperSORTLib.perturbation.label_ops import (
    dilate_class,
    elastic_deform,
    merge_classes,
    omit_class,
    remove_slices,
    swap_classes,
    translate_label,
)
from HyperSORTLib.perturbation.marginal import marginal_probability, marginal_threshold
from HyperSORTLib.perturbation.registry import PERTURBATIONS, SPECS

__all__ = [
    "PERTURBATIONS",
    "SPECS",
    "annotate_neighbour",
    "class_volumes_ml",
    "dice_per_class",
    "dilate_class",
    "elastic_deform",
    "empty_label",
    "erode_class",
    "gaussian_field_deform",
    "gaussian_random_field",
    "marginal_probability",
    "marginal_threshold",
    "merge_classes",
    "omit_class",
    "remove_slices",
    "replace_label",
    "shift_boundary",
    "shift_class",
    "swap_classes",
    "translate_label",
    "volume_change",
]
