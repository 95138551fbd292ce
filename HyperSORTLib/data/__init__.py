"""Reading datasets and preprocessing them for training and inference."""

from HyperSORTLib.data.cases import CaseList, CaseRecord, read_nnunet_folder
from HyperSORTLib.data.dataset import CaseLoadError, SegmentationCases
from HyperSORTLib.data.preprocessing import intensity_transform, training_transforms

__all__ = ["CaseList", "CaseRecord", "read_nnunet_folder", "SegmentationCases", "CaseLoadError",
           "training_transforms", "intensity_transform"]
