"""Case lists: which image goes with which label, under which id.

:func:`read_nnunet_folder` reads the nnU-Net raw / Medical Segmentation Decathlon layout
(``dataset.json``, ``imagesTr/<id>_0000.nii.gz``, ``labelsTr/<id>.nii.gz``), which is also the
layout of the built-in demo cohort.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable


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
        declared_values: every label value the dataset's own class map declares, when known
            (``None`` otherwise). With a class selection, a value outside it is still reported
            by the checks (it is not a class the dataset has), though loading maps it to background.
        source: how to read the list again (``{"path", "format", "classes", "options", "excluded"}``,
            see :func:`HyperSORTLib.data.readers.case_list_from_source`); set by
            :func:`~HyperSORTLib.data.readers.read_dataset`, ``None`` for hand-built lists.
    """

    cases: tuple[CaseRecord, ...]
    class_names: tuple[str, ...]
    root: Path
    label_values: tuple[int, ...] | None = None
    layout: str = "nnunet"
    declared_values: tuple[int, ...] | None = None
    source: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(c.case_id for c in self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def without(self, case_ids: Iterable[str]) -> "CaseList":
        """The same list without the given cases (every case carrying one of those ids).

        ``source["excluded"]`` lists the removed ids, so the reduced list can be read again.
        """
        drop = set(case_ids)
        if not drop:
            return self
        source = None
        if self.source is not None:
            excluded = list(self.source.get("excluded", []))
            excluded += sorted(i for i in drop if i not in excluded)
            source = {**self.source, "excluded": excluded}
        return replace(self, cases=tuple(c for c in self.cases if c.case_id not in drop), source=source)


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

    A case is every id with a label in ``labelsTr/`` or an image in ``imagesTr/``. A case whose
    image or label file is absent is still listed (with the path where the file was expected),
    so that :func:`HyperSORTLib.data.validation.check_cases` reports it by name.

    Args:
        root: folder with ``dataset.json``, ``imagesTr/`` and ``labelsTr/``.

    Raises:
        FileNotFoundError: the folder or ``dataset.json`` is missing, or it holds no cases.
        ValueError: ``dataset.json`` is malformed (the message says what was expected).
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root} is not an nnU-Net/MSD dataset folder: {meta_path} is missing.")
    meta = read_json(meta_path)
    if "labels" not in meta:
        raise ValueError(f"{meta_path} has no 'labels' entry naming the classes.")
    class_names = _class_names_from_labels(meta["labels"], meta_path)
    ending = meta.get("file_ending", ".nii.gz")
    labels_dir, images_dir = root / "labelsTr", root / "imagesTr"
    label_files = {p.name[: -len(ending)]: p for p in labels_dir.glob(f"*{ending}") if not p.name.startswith(".")}
    image_files: dict[str, Path] = {}
    for path in images_dir.glob(f"*{ending}"):
        if path.name.startswith("."):
            continue
        stem = path.name[: -len(ending)]
        if stem.endswith("_0000") and stem not in label_files:  # nnU-Net: channel 0 of the case
            image_files[stem[:-5]] = path
        elif stem in label_files or not (len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit()):
            image_files.setdefault(stem, path)  # MSD keeps the label's file name for the image
        # else: another channel (_0001, ...) of a multi-channel nnU-Net case
    if not label_files and not image_files:
        raise FileNotFoundError(f"No cases found in {root}: no '*{ending}' files in {labels_dir} or {images_dir}.")
    cases = []
    for case_id in sorted(set(label_files) | set(image_files)):
        image = image_files.get(case_id, images_dir / f"{case_id}_0000{ending}")
        label = label_files.get(case_id, labels_dir / f"{case_id}{ending}")
        cases.append(CaseRecord(case_id, image, label))
    return CaseList(tuple(cases), class_names, root, declared_values=tuple(range(len(class_names))))


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error names the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a UTF-8 text file: {exc}") from exc
