"""Dataset readers: the layouts users download, turned into a :class:`CaseList`.

=================  ===========================================================================
format             layout
=================  ===========================================================================
``nnunet``         nnU-Net raw / Medical Segmentation Decathlon: ``dataset.json`` (``labels``),
                   ``imagesTr/<id>_0000.nii.gz`` (MSD: ``imagesTr/<id>.nii.gz``), ``labelsTr/<id>.nii.gz``.
``amos``           AMOS 2022: ``dataset.json`` with ``training`` (and ``validation``) lists of
                   ``{"image", "label"}``, ``imagesTr/``, ``labelsTr/``; CT cases only by default.
``totalsegmentator``  one folder per subject with ``ct.nii.gz`` and ``segmentations/<structure>.nii.gz``
                   (one binary mask per structure), ``meta.csv`` at the top (optional).
``csv``            a CSV file with columns ``image,label[,id]``; paths relative to the CSV's folder.
=================  ===========================================================================

Class selection (``classes=``) works the same for every format and is what a model's classes
are called afterwards:

* ``None``: every class of the dataset (TotalSegmentator: every structure of the first subject);
* ``["liver", "spleen"]``: those classes, in that order, background first;
* ``{"liver": "liver", "kidney_left": "left kidney"}``: select and rename (source -> new name);
* the command-line string ``"liver,kidney_left=left kidney"`` (see :func:`parse_classes`).

A source class is named by its name in the dataset (matched case-insensitively, with spaces,
hyphens and underscores equivalent; AMOS also accepts TotalSegmentator-style names such as
``kidney_right`` or ``aorta``) or by its integer label value (``"6"``, needed for CSV lists
without class names). Unselected classes become background.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from HyperSORTLib.data.cases import CaseList, CaseRecord, _class_names_from_labels, read_json, read_nnunet_folder

FORMATS = ("nnunet", "amos", "totalsegmentator", "csv")

ClassSelection = Union[None, str, Sequence[str], Mapping[Any, str]]

#: AMOS 2022 ``dataset.json`` class names (values 1..15; spellings as distributed).
AMOS_CLASSES = ("background", "spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver",
                "stomach", "arota", "postcava", "pancreas", "right adrenal gland", "left adrenal gland",
                "duodenum", "bladder", "prostate/uterus")

#: Other names accepted for AMOS classes (TotalSegmentator names and corrected spellings).
AMOS_ALIASES = {
    "kidney_right": "right kidney", "kidney_left": "left kidney", "gallbladder": "gall bladder",
    "aorta": "arota", "inferior_vena_cava": "postcava", "ivc": "postcava",
    "adrenal_gland_right": "right adrenal gland", "adrenal_gland_left": "left adrenal gland",
    "urinary_bladder": "bladder", "prostate": "prostate/uterus", "uterus": "prostate/uterus",
}

#: AMOS numbers its CT scans 1..500 and its MRI scans from 501 (``amos_0507`` is MRI).
AMOS_LAST_CT_ID = 500


class DatasetFormatError(ValueError):
    """A dataset folder or list does not follow the layout of its format; the message says how."""


# --------------------------------------------------------------------------------------- classes
def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", str(name).strip().lower())


def parse_classes(text: str | None) -> list[tuple[str, str]] | None:
    """Parse the command-line class selection ``"liver,kidney_left=left kidney,6=liver"``.

    Items are separated by commas; ``SOURCE=NAME`` renames. Returns ``(source, name)`` pairs, or
    ``None`` for an empty string.
    """
    if text is None or not str(text).strip():
        return None
    pairs = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        source, sep, name = item.partition("=")
        source, name = source.strip(), name.strip()
        if not source or (sep and not name):
            raise ValueError(f"Class selection item {item!r}: expected SOURCE or SOURCE=NAME.")
        pairs.append((source, name or source))
    return pairs or None


def normalize_classes(classes: ClassSelection) -> list[tuple[str, str]] | None:
    """Any accepted form of ``classes`` -> ``[(source, name), ...]`` (``None``: all classes)."""
    if classes is None:
        return None
    if isinstance(classes, str):
        pairs = parse_classes(classes)
        if pairs is None:
            return None
    elif isinstance(classes, Mapping):
        pairs = [(str(k), str(v)) for k, v in classes.items()]
    else:
        pairs = []
        for item in classes:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((str(item[0]), str(item[1])))
            elif isinstance(item, (str, int)) and not isinstance(item, bool):
                pairs.append((str(item), str(item)))
            else:
                raise ValueError(f"Class selection item {item!r}: expected a name or a (source, name) pair.")
    if not pairs:
        raise ValueError("The class selection is empty; name at least one class (or select all with None).")
    names = [name for _, name in pairs]
    keys = [_norm(n) for n in names]  # 'Left kidney' and 'left_kidney' would be one class to a reader
    duplicates = sorted({n for n, k in zip(names, keys) if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"Class selection: the names {duplicates} are given to more than one class; "
                         f"every selected class needs its own name.")
    if any(_norm(name) in ("background", "0") for name in names) or any(src == "0" for src, _ in pairs):
        raise ValueError("Class selection: background (value 0) is always class 0; list only foreground classes.")
    return pairs


def _resolve(available: Mapping[int, str], pairs: list[tuple[str, str]], where: str,
             aliases: Mapping[str, str] | None = None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Selected ``(source, name)`` pairs -> (class names, label values), background first."""
    by_name = {_norm(name): value for value, name in available.items() if value != 0}
    alias = {_norm(k): _norm(v) for k, v in (aliases or {}).items()}
    names, values = ["background"], [0]
    for source, name in pairs:
        key = _norm(source)
        if key in by_name:
            value = by_name[key]
        elif alias.get(key) in by_name:
            value = by_name[alias[key]]
        elif source.strip().isdigit():
            value = int(source)
            if available and value not in available:
                raise ValueError(f"{where}: there is no class with label value {value}; the classes are "
                                 f"{_describe(available)}.")
        else:
            close = difflib.get_close_matches(key, list(by_name) + list(alias), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"{where}: no class named {source!r}; the classes are {_describe(available)}.{hint}")
        if value in values:
            raise ValueError(f"{where}: class {source!r} (value {value}) is selected twice.")
        names.append(name)
        values.append(value)
    return tuple(names), tuple(values)


def _describe(available: Mapping[int, str]) -> str:
    items = [f"{v}={n}" for v, n in sorted(available.items()) if v != 0]
    return ", ".join(items[:40]) + (f", ... ({len(items)} in all)" if len(items) > 40 else "") if items else "unnamed"


def _with_selection(cases: Sequence[CaseRecord], available_names: Sequence[str], root: Path, layout: str,
                    classes: ClassSelection, where: str, aliases: Mapping[str, str] | None = None) -> CaseList:
    """A CaseList over label-map files whose value ``i`` is ``available_names[i]``."""
    pairs = normalize_classes(classes)
    declared = tuple(range(len(available_names)))
    if pairs is None:
        return CaseList(tuple(cases), tuple(available_names), root, None, layout, declared)
    names, values = _resolve(dict(enumerate(available_names)), pairs, where, aliases)
    identity = values == tuple(range(len(values))) and len(values) == len(available_names)
    return CaseList(tuple(cases), names, root, None if identity else values, layout, declared)


# --------------------------------------------------------------------------------------- readers
def read_nnunet(root: str | Path, classes: ClassSelection = None) -> CaseList:
    """nnU-Net raw / MSD folder (see :func:`~HyperSORTLib.data.cases.read_nnunet_folder`)."""
    base = read_nnunet_folder(root)
    return _with_selection(base.cases, base.class_names, base.root, "nnunet", classes, f"{Path(root) / 'dataset.json'}")


def _amos_number(case_id: str) -> int | None:
    match = re.search(r"(\d+)$", case_id)
    return int(match.group(1)) if match else None


def read_amos(root: str | Path, classes: ClassSelection = None, modality: str = "CT",
              splits: Sequence[str] | str = ("training",)) -> CaseList:
    """AMOS 2022 folder.

    Args:
        root: folder with ``dataset.json``, ``imagesTr/``, ``labelsTr/`` (and ``imagesVa/``, ``labelsVa/``).
        classes: class selection (module docstring); AMOS names as in its ``dataset.json``
            (``liver``, ``right kidney``, ``arota``, ``postcava``, ...) or their aliases.
        modality: ``"CT"`` (cases numbered up to 500), ``"MRI"`` (501 and above) or ``"all"``.
            AMOS's ``dataset.json`` says ``"modality": {"0": "CT"}`` for all cases, so the case
            number is what tells the two apart.
        splits: the ``dataset.json`` lists to read (``"training"``, ``"validation"``; both have labels).

    Raises:
        FileNotFoundError: ``dataset.json`` is missing.
        DatasetFormatError: a list is missing or malformed, or no case is left.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root} is not an AMOS folder: {meta_path} is missing.")
    meta = read_json(meta_path)
    modality = str(modality).upper()
    if modality not in ("CT", "MRI", "ALL"):
        raise ValueError(f"AMOS modality must be 'CT', 'MRI' or 'all', found {modality!r}.")
    names = _class_names_from_labels(meta["labels"], meta_path) if "labels" in meta else AMOS_CLASSES
    cases = []
    for split in [splits] if isinstance(splits, str) else list(splits):
        entries = meta.get(split)
        if not isinstance(entries, list):
            raise DatasetFormatError(f"{meta_path} has no {split!r} list of {{'image', 'label'}} entries.")
        for position, entry in enumerate(entries):
            if not (isinstance(entry, Mapping) and "image" in entry and "label" in entry):
                raise DatasetFormatError(f"{meta_path}: {split}[{position}] is {entry!r}; expected "
                                         f"{{'image': ..., 'label': ...}}.")
            image, label = root / entry["image"], root / entry["label"]
            case_id = _strip_nifti(Path(entry["image"]).name)
            number = _amos_number(case_id)
            is_mri = number is not None and number > AMOS_LAST_CT_ID
            if modality == "CT" and is_mri or modality == "MRI" and not is_mri:
                continue
            cases.append(CaseRecord(case_id, Path(_clean(image)), Path(_clean(label))))
    if not cases:
        raise DatasetFormatError(f"{meta_path}: no {modality} case in the lists {splits!r}.")
    return _with_selection(cases, names, root, "amos", classes, str(meta_path), AMOS_ALIASES)


def _clean(path: Path) -> str:
    return str(Path(*[part for part in path.parts if part != "."]))


def _strip_nifti(name: str) -> str:
    for ending in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem


def _read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file (comma or semicolon separated), keys stripped and lower-cased."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{path} is not a UTF-8 text file: {exc}") from exc
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    if reader.fieldnames is None:
        raise DatasetFormatError(f"{path} is empty; expected a header row.")
    rows = []
    for row in reader:
        rows.append({str(k).strip().lower(): (v or "").strip() for k, v in row.items() if k is not None})
    return rows


def read_totalsegmentator(root: str | Path, classes: ClassSelection = None, split: str | Sequence[str] | None = None,
                          masks_folder: str = "segmentations", image_name: str = "ct.nii.gz") -> CaseList:
    """TotalSegmentator folder: one subject per folder, one binary mask per structure.

    Args:
        root: folder of subject folders (``s0000/ct.nii.gz``, ``s0000/segmentations/liver.nii.gz``)
            and, optionally, ``meta.csv`` (``image_id;...;split``).
        classes: structures by file name without ``.nii.gz`` (``liver``, ``kidney_left``, ...),
            optionally renamed; ``None`` takes every structure of the first subject, sorted by name.
            The selected masks are combined into one label map (class ``i`` = the ``i``-th structure;
            where masks overlap the earlier one wins).
        split: keep only subjects whose ``meta.csv`` split is this (or one of these), e.g. ``"train"``.
        masks_folder: name of the per-subject mask folder.
        image_name: name of the per-subject image.

    Raises:
        FileNotFoundError: no subject folders, or ``split`` given without ``meta.csv``.
        ValueError: an unknown structure name (the message lists close names).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"TotalSegmentator folder {root} does not exist.")
    subjects = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and ((p / image_name).exists() or (p / masks_folder).is_dir()))
    if not subjects:
        raise FileNotFoundError(f"{root} holds no subject folders with {image_name} or {masks_folder}/.")
    meta_path = root / "meta.csv"
    if split is not None:
        if not meta_path.is_file():
            raise FileNotFoundError(f"split={split!r} needs {meta_path}, which is missing.")
        wanted = {split} if isinstance(split, str) else set(split)
        rows = _read_table(meta_path)
        if rows and ("image_id" not in rows[0] or "split" not in rows[0]):
            raise DatasetFormatError(f"{meta_path} needs columns image_id and split; found {sorted(rows[0])}.")
        keep = {r["image_id"] for r in rows if r.get("split") in wanted}
        subjects = [s for s in subjects if s.name in keep]
        if not subjects:
            raise DatasetFormatError(f"No subject of {root} has split {sorted(wanted)} in {meta_path}.")
    files = {_strip_nifti(p.name): p.name[len(_strip_nifti(p.name)):]
             for p in (subjects[0] / masks_folder).glob("*.nii*") if not p.name.startswith(".")}
    structures = sorted(files)
    if not structures:
        raise FileNotFoundError(f"{subjects[0] / masks_folder} holds no masks; expected <structure>.nii.gz files.")
    pairs = normalize_classes(classes)
    if pairs is None:
        pairs = [(s, s) for s in structures]
    available = {i + 1: s for i, s in enumerate(structures)}
    names, values = _resolve({0: "background", **available}, pairs, f"TotalSegmentator folder {root}")
    chosen = [available[v] for v in values[1:]]
    cases = tuple(CaseRecord(s.name, s / image_name, None,
                             tuple(s / masks_folder / f"{name}{files[name]}" for name in chosen)) for s in subjects)
    return CaseList(cases, names, root, None, "totalsegmentator")


def read_csv_list(path: str | Path, classes: ClassSelection = None) -> CaseList:
    """A CSV list of cases: columns ``image,label`` and optionally ``id``.

    Paths are relative to the CSV's folder (absolute paths are kept). Without an ``id`` column
    the id is the image file name without its extension (and without a ``_0000`` channel suffix).
    A CSV does not name its classes: they come from ``classes``, as label values with names
    (``{"1": "liver", "2": "spleen"}`` or ``"1=liver,2=spleen"``) or as a list of names of the
    values 1, 2, ... in order; or from a ``dataset.json`` (nnU-Net ``labels``) beside the CSV.

    Raises:
        FileNotFoundError: the CSV is missing.
        DatasetFormatError: missing columns, an empty list or no class names.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetFormatError(f"{path} is a folder; the csv format reads a CSV file with columns image,label[,id].")
    if not path.is_file():
        raise FileNotFoundError(f"Case list {path} does not exist.")
    rows = _read_table(path)
    if not rows:
        raise DatasetFormatError(f"{path} lists no cases.")
    missing = {"image", "label"} - set(rows[0])
    if missing:
        raise DatasetFormatError(f"{path} needs the columns image,label[,id]; {', '.join(sorted(missing))} "
                                 f"missing (found {', '.join(rows[0])}).")
    root = path.parent
    cases = []
    for number, row in enumerate(rows, start=2):
        if not row["image"] or not row["label"]:
            raise DatasetFormatError(f"{path}, line {number}: empty image or label path.")
        image, label = root / row["image"], root / row["label"]
        case_id = row.get("id") or _strip_nifti(Path(row["image"]).name)
        if "id" not in row and case_id.endswith("_0000"):
            case_id = case_id[:-5]
        cases.append(CaseRecord(case_id, image, label))
    meta_path = root / "dataset.json"
    if meta_path.is_file() and "labels" in (meta := read_json(meta_path)):
        return _with_selection(cases, _class_names_from_labels(meta["labels"], meta_path), root, "csv", classes,
                               str(path))
    pairs = normalize_classes(classes)
    if pairs is None:
        raise DatasetFormatError(f"{path} does not name its classes: give them, e.g. --classes 1=liver,2=spleen "
                                 f"(label value=name), or put a dataset.json with 'labels' beside it.")
    if all(src.isdigit() for src, _ in pairs):
        names, values = _resolve({}, pairs, str(path))
        identity = values == tuple(range(len(values)))
        return CaseList(tuple(cases), names, root, None if identity else values, "csv")
    if any(src.isdigit() for src, _ in pairs) or any(src != name for src, name in pairs):
        raise DatasetFormatError(f"{path}: without class names in the data, name classes by label value "
                                 f"(1=liver,2=spleen) or list the names of values 1, 2, ... in order.")
    return CaseList(tuple(cases), ("background", *[name for _, name in pairs]), root, None, "csv")


READERS: dict[str, Callable[..., CaseList]] = {
    "nnunet": read_nnunet, "amos": read_amos, "totalsegmentator": read_totalsegmentator, "csv": read_csv_list,
}

FORMAT_ALIASES = {"msd": "nnunet", "nnunet": "nnunet", "amos": "amos", "amos22": "amos",
                  "totalsegmentator": "totalsegmentator", "ts": "totalsegmentator", "csv": "csv"}


def detect_format(path: str | Path) -> str:
    """The format of a dataset path (see the module docstring); raises when none fits."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No dataset at {path}: it does not exist, so its dataset.json is missing (expected "
                                f"a folder with dataset.json, TotalSegmentator subject folders or a .csv list).")
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            return "csv"
        raise DatasetFormatError(f"{path} is a file but not a CSV case list (.csv).")
    meta_path = path / "dataset.json"
    if meta_path.is_file():
        meta = read_json(meta_path)
        name = str(meta.get("name", "")) + " " + str(meta.get("description", ""))
        entries = meta.get("training") if isinstance(meta.get("training"), list) else []
        first = str(entries[0].get("image", "")) if entries and isinstance(entries[0], Mapping) else ""
        if "amos" in name.lower() or Path(first).name.lower().startswith("amos_"):
            return "amos"
        return "nnunet"
    if (path / "meta.csv").is_file() or any((p / "segmentations").is_dir() for p in _first_dirs(path)):
        return "totalsegmentator"
    raise DatasetFormatError(f"Cannot tell the format of {path}: expected dataset.json (nnU-Net, MSD, AMOS), "
                             f"subject folders with segmentations/ (TotalSegmentator) or a .csv list; "
                             f"name it with --format ({', '.join(FORMATS)}).")


def _first_dirs(path: Path, limit: int = 20) -> Iterable[Path]:
    count = 0
    for child in sorted(path.iterdir()):
        if child.is_dir():
            yield child
            count += 1
            if count >= limit:
                return


def read_dataset(path: str | Path, format: str | None = None, classes: ClassSelection = None,
                 **options: Any) -> CaseList:
    """Read any supported dataset layout into a :class:`CaseList`.

    Args:
        path: dataset folder, or CSV file for ``csv``.
        format: one of :data:`FORMATS` (``msd`` = ``nnunet``); ``None`` detects it.
        classes: class selection and renaming (module docstring).
        **options: reader-specific options: AMOS ``modality``, ``splits``; TotalSegmentator
            ``split``, ``masks_folder``, ``image_name``.

    Returns:
        The case list; its ``source`` records path, format, classes and options, which
        :func:`case_list_from_source` reads back.
    """
    path = Path(path).expanduser().resolve()
    fmt = detect_format(path) if format is None else FORMAT_ALIASES.get(str(format).lower())
    if fmt is None:
        raise ValueError(f"Unknown dataset format {format!r}; expected one of {', '.join(FORMATS)} (or msd).")
    reader = READERS[fmt]
    try:
        case_list = reader(path, classes, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ValueError(f"Format {fmt!r} does not take the option(s) {sorted(options)}.") from None
        raise
    pairs = normalize_classes(classes)
    source = {"path": str(path), "format": fmt,
              "classes": None if pairs is None else [list(p) for p in pairs],
              "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}
    return dataclasses.replace(case_list, source=source)


def case_list_from_source(data_source: Mapping[str, Any]) -> CaseList:
    """Read a run's cases again from its ``data_source`` (``config.json``).

    ``data_source`` is what :func:`read_dataset` stored in ``CaseList.source``:
    ``{"path", "format", "classes", "options", "excluded"}`` (only ``path`` is required;
    ``excluded`` names cases left out of the run).
    """
    if "path" not in data_source:
        raise ValueError(f"data_source {dict(data_source)!r} has no 'path'.")
    case_list = read_dataset(data_source["path"], data_source.get("format"), data_source.get("classes"),
                             **dict(data_source.get("options") or {}))
    excluded = list(data_source.get("excluded") or [])
    return case_list.without(excluded) if excluded else case_list
