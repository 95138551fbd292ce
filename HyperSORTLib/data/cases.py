"""Case lists: which image goes with which label, under which id.

:func:`read_nnunet_folder` reads the nnU-Net raw / Medical Segmentation Decathlon layout
(``dataset.json``, ``imagesTr/<id>_0000.nii.gz``, ``labelsTr/<id>.nii.gz``), which is also the
layout of the built-in demo cohort.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CaseRecord:
    """One training case: an id, an image file and its annotation.

    The annotation is either one label-map file (``label``) or, as in TotalSegmentator, one
    binary mask file per class (``masks[i]`` is class ``i + 1``), combined on loading.
    """

    case_id: str
    image: Path
    label: Path | None = None
    masks: tuple[Path, ...] = ()


@dataclass(frozen=True)
class CaseList:
    """The cases of a dataset with the names of its classes (background first).

    Attributes:
        cases: the cases, in a stable order (a case's position is its latent-table row).
        class_names: name of class ``i`` at index ``i``; index 0 is background.
        root: the dataset folder (or the folder of a CSV list).
        label_values: the value that marks class ``i`` in the label files, when the classes are
            a selection or reordering of the file's values (``None``: values are class indices).
            Values not listed become background.
        layout: the reader that produced the list (``nnunet``, ``amos``, ``totalsegmentator``, ``csv``).
    """

    cases: tuple[CaseRecord, ...]
    class_names: tuple[str, ...]
    root: Path
    label_values: tuple[int, ...] | None = None
    layout: str = "nnunet"

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(c.case_id for c in self.cases)


def _class_names_from_labels(labels: dict, source: Path) -> tuple[str, ...]:
    """nnU-Net v2 stores ``{"name": id}``, v1/MSD ``{"id": "name"}``; both give names by id."""
    by_id: dict[int, str] = {}
    for key, value in labels.items():
        try:
            if isinstance(value, int):
                by_id[value] = str(key)
            else:
                by_id[int(key)] = str(value)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: 'labels' must map names to integer ids (or ids to names), "
                             f"found {key!r}: {value!r}.") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{source}: label ids must be 0..K-1 without gaps, found {sorted(by_id)}.")
    return tuple(by_id[i] for i in range(len(by_id)))


def read_nnunet_folder(root: str | Path) -> CaseList:
    """Read an nnU-Net raw / MSD dataset folder.

    Args:
        root: folder with ``dataset.json``, ``imagesTr/`` and ``labelsTr/``.

    Raises:
        FileNotFoundError: the folder, ``dataset.json`` or a case's image is missing (named).
        ValueError: ``dataset.json`` is malformed (the message says what was expected).
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root} is not an nnU-Net/MSD dataset folder: {meta_path} is missing.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path} is not valid JSON: {exc}") from exc
    if "labels" not in meta:
        raise ValueError(f"{meta_path} has no 'labels' entry naming the classes.")
    class_names = _class_names_from_labels(meta["labels"], meta_path)
    ending = meta.get("file_ending", ".nii.gz")
    labels_dir, images_dir = root / "labelsTr", root / "imagesTr"
    label_files = sorted(p for p in labels_dir.glob(f"*{ending}") if not p.name.startswith("."))
    if not label_files:
        raise FileNotFoundError(f"No label files '*{ending}' found in {labels_dir}.")
    cases = []
    for label in label_files:
        case_id = label.name[: -len(ending)]
        image = images_dir / f"{case_id}_0000{ending}"
        if not image.is_file():
            image_msd = images_dir / label.name  # MSD keeps the same file name for both
            if not image_msd.is_file():
                raise FileNotFoundError(f"Case '{case_id}': label {label} has no image; expected {image}.")
            image = image_msd
        cases.append(CaseRecord(case_id, image, label))
    return CaseList(tuple(cases), class_names, root)
