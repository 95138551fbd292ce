"""Synthetic CT-like phantoms and the built-in biased demo cohort."""

from HyperSORTLib.demo.cohort import ERROR_KINDS, GROUPS, Cohort, CohortSpec, demo_plan, generate_cohort
from HyperSORTLib.demo.phantom import CLASS_NAMES, Phantom, make_phantom, phantom_affine

__all__ = [
    "CLASS_NAMES",
    "ERROR_KINDS",
    "GROUPS",
    "Cohort",
    "CohortSpec",
    "Phantom",
    "demo_plan",
    "generate_cohort",
    "make_phantom",
    "phantom_affine",
]
