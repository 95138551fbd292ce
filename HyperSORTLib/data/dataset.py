"""The training dataset: preprocessed cases held in memory, each with its latent-table row."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Dataset

from HyperSORTLib.data.cases import CaseList


class CaseLoadError(ValueError):
    """A case could not be read or preprocessed; the message names the case and its files."""


class SegmentationCases(Dataset):
    """Preprocess every case once and serve ``{"image", "label", "index", "case_id"}``.

    ``index`` is the case's position in the case list, which is its row in the latent table.

    Args:
        case_list: the dataset's cases and class names.
        transform: maps ``{"image": path, "label": path}`` to tensors [1, X, Y, Z].
        progress: show a progress bar while preprocessing.
    """

    def __init__(self, case_list: CaseList, transform: Callable[[dict], dict], progress: bool = False) -> None:
        self.case_list = case_list
        num_classes = len(case_list.class_names)
        records = case_list.cases
        if progress:
            from tqdm.auto import tqdm

            records = tqdm(records, desc="preprocessing", unit="case")
        self.items = []
        for index, case in enumerate(records):
            try:
                item = transform({"image": str(case.image), "label": str(case.label)})
            except Exception as exc:  # MONAI wraps reader errors; name the case instead
                raise CaseLoadError(f"Case '{case.case_id}' (image {case.image}, label {case.label}) could not "
                                    f"be loaded: {exc}") from exc
            image = torch.as_tensor(item["image"], dtype=torch.float32)
            label = torch.as_tensor(item["label"]).round().long()
            if not torch.isfinite(image).all():
                raise CaseLoadError(f"Case '{case.case_id}': image {case.image} contains NaN or infinite values.")
            if image.shape != label.shape:
                raise CaseLoadError(f"Case '{case.case_id}': image shape {tuple(image.shape)} and label shape "
                                    f"{tuple(label.shape)} differ after preprocessing.")
            low, high = int(label.min()), int(label.max())
            if low < 0 or high >= num_classes:
                raise CaseLoadError(f"Case '{case.case_id}': label {case.label} has values {low}..{high}, "
                                    f"expected 0..{num_classes - 1} ({', '.join(case_list.class_names)}).")
            # uint8 keeps the in-memory cache 8x smaller than int64; the trainer widens per batch
            label = label.to(torch.uint8) if num_classes <= 256 else label
            self.items.append({"image": image, "label": label, "index": index, "case_id": case.case_id})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]
