"""Reading datasets and preprocessing them for training and inference.

Readers (:func:`read_dataset`: nnU-Net/MSD, AMOS, TotalSegmentator, CSV) give a
:class:`CaseList`; :func:`load_label` turns a case's annotation into class indices;
:func:`check_cases` finds broken cases; :class:`PreprocessedCases` (disk-cached) and
:class:`SegmentationCases` (in memory) serve training items.
"""

from HyperSORTLib.data.cache import PreprocessCache, default_cache_dir
from HyperSORTLib.data.cases import CaseList, CaseRecord, read_nnunet_folder
from HyperSORTLib.data.dataset import CaseLoadError, PreprocessedCases, SegmentationCases
from HyperSORTLib.data.labels import LabelError, load_label
from HyperSORTLib.data.preprocessing import (PreprocessedCase, intensity_transform, preprocess_case,
                                             resample_to_reference, training_transforms, volume_transforms)
from HyperSORTLib.data.readers import FORMATS, case_list_from_source, detect_format, parse_classes, read_dataset
from HyperSORTLib.data.validation import CheckReport, Problem, check_cases

__all__ = ["CaseList", "CaseRecord", "read_nnunet_folder", "SegmentationCases", "PreprocessedCases", "CaseLoadError",
           "training_transforms", "volume_transforms", "intensity_transform", "preprocess_case", "PreprocessedCase",
           "resample_to_reference", "load_label", "LabelError", "read_dataset", "detect_format", "parse_classes",
           "case_list_from_source", "FORMATS", "PreprocessCache", "default_cache_dir", "check_cases", "CheckReport",
           "Problem"]
