"""Reading datasets and preprocessing them for training and inference.

Readers (:func:`read_dataset`: nnU-Net/MSD, AMOS, TotalSegmentator, CSV) give a
:class:`CaseList`; :func:`load_label` turns a case's annotation into class indices;
:func:`check_cases` finds broken cases; :class:`PreprocessedCases` (disk-cached) and
:class:`SegmentationCases` (in memory) serve training items.

Names are imported from their submodules on first use, so tools that only read case lists and
label files (``hypersort perturb``, ``hypersort check-data`` and their worker processes) do not
pay for importing torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "cache": ("PreprocessCache", "default_cache_dir"),
    "cases": ("CaseList", "CaseRecord", "read_nnunet_folder"),
    "dataset": ("CaseLoadError", "PreprocessedCases", "SegmentationCases"),
    "labels": ("LabelError", "load_label"),
    "preprocessing": ("PreprocessedCase", "intensity_transform", "preprocess_case", "resample_to_reference",
                      "training_transforms", "volume_transforms"),
    "readers": ("FORMATS", "case_list_from_source", "detect_format", "parse_classes", "read_dataset"),
    "validation": ("CheckReport", "Problem", "check_cases"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'HyperSORTLib.data' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"HyperSORTLib.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
