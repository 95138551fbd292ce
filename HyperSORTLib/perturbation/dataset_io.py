"""Files of a perturbed dataset copy: where each file goes, and how it is written.

A perturbed copy keeps the source's layout. Every label (or mask) file of a case is written at
its path relative to the dataset folder, with the original header (same grid, affine, qform and
sform codes, on-disk data type); other annotation files in the same folders are copied; images
and every other data file are linked (relative symbolic links, or copies where links are not
possible or ``copy=True``); small text metadata (``dataset.json``, ``meta.csv``, ...) is copied
with absolute paths into the source rewritten to the copy. A CSV case list is rewritten cell by
cell so that its paths still lead to the right files from the copy.

Every write is atomic: a file appears complete or not at all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from HyperSORTLib.data.cases import CaseList
from HyperSORTLib.data.manifest import MANIFEST_FILE
from HyperSORTLib.utils.io import atomic_path, atomic_save_nifti
from HyperSORTLib.utils.nifti import open_nifti

__all__ = ["copy_file", "label_destinations", "link_or_copy", "mirror_other_files", "normalise_path", "read_raw",
           "rewrite_case_list", "save_like", "write_masks", "write_label_file"]

#: Text files copied (with paths rewritten) rather than linked.
METADATA_SUFFIXES = (".json", ".csv", ".tsv", ".txt", ".yaml", ".yml", ".md", ".xml", ".ini", ".cfg")
_METADATA_MAX_BYTES = 20 * 1024 * 1024
#: Files a perturbed copy writes itself at its top level; a source's own are not copied over them.
OWN_FILES = (MANIFEST_FILE, "perturb_plan.yaml")
STATE_DIR = ".hypersort_perturb"


def normalise_path(path: Path | str) -> Path:
    """Absolute path with ``..`` and ``.`` removed, without following symbolic links."""
    return Path(os.path.normpath(os.path.abspath(path)))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def label_destinations(case_list: CaseList, dst: Path) -> dict[Path, Path]:
    """Source label/mask file -> its path in the copy (same path relative to the dataset folder;
    files outside it go to ``dst/external/<hash of their folder>/<name>``)."""
    root = normalise_path(case_list.root)
    out: dict[Path, Path] = {}
    for case in case_list.cases:
        for path in ([case.label] if case.label is not None else []) + list(case.masks):
            src = normalise_path(path)
            if _inside(src, root):
                out[src] = dst / src.relative_to(root)
            else:
                tag = hashlib.sha1(str(src.parent).encode("utf-8")).hexdigest()[:8]
                out[src] = dst / "external" / tag / src.name
    return out


# --------------------------------------------------------------------------- label files


def read_raw(path: Path) -> tuple[np.ndarray, nib.spatialimages.SpatialImage]:
    """The stored values of a label or mask file (no scaling to class indices) and its image."""
    image = open_nifti(path, "label")  # refuses a file smaller than its header declares
    data = np.asanyarray(image.dataobj)
    return data, image


def save_like(template: nib.spatialimages.SpatialImage, data: np.ndarray, path: Path) -> None:
    """Write ``data`` atomically with ``template``'s affine and a copy of its header (grid, codes
    and on-disk data type unchanged); ``.nii.gz`` output is byte-reproducible (no gzip time)."""
    header = template.header.copy()
    image = type(template)(np.asarray(data).reshape(template.shape), template.affine, header)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith((".nii", ".nii.gz")):
        atomic_save_nifti(image, path)
        return
    # Other formats: nibabel needs the real suffix to pick the format, so save beside the
    # destination under a hidden name that keeps it, then rename.
    suffix = "".join(path.suffixes)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        nib.save(image, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def copy_file(src: Path, dst: Path) -> None:
    """Copy bytes atomically (following a symbolic link at ``src``)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _values_of(case_list: CaseList) -> np.ndarray:
    """Stored value of each class index (``label_values``, or the index itself)."""
    n = len(case_list.class_names)
    return np.asarray(case_list.label_values if case_list.label_values is not None else range(n), dtype=np.int64)


def write_label_file(case_list: CaseList, src: Path, dst: Path, clean: np.ndarray, perturbed: np.ndarray) -> None:
    """Write a case's perturbed label file: voxels whose class changed get the stored value of
    their new class; every other voxel keeps its stored value (so values outside the selected
    classes survive where the perturbation did not touch them)."""
    raw, image = read_raw(src)
    changed = clean != perturbed
    if not changed.any():
        copy_file(src, dst)
        return
    new = np.array(raw, copy=True).reshape(clean.shape)
    new[changed] = _values_of(case_list)[perturbed[changed]].astype(new.dtype, copy=False)
    save_like(image, new, dst)


def write_masks(case_list: CaseList, sources: Iterable[Path], destinations: Iterable[Path], clean: np.ndarray,
                perturbed: np.ndarray) -> None:
    """Write a case's perturbed binary masks (mask ``j`` holds stored value ``j + 1``).

    Where the class changed, the mask of the new class is set (to 1) and every other mask of
    the case is cleared, so the masks combine back to the perturbed label; elsewhere the masks
    keep their voxels, overlaps included. A mask with no changed voxel is copied unchanged.
    """
    changed = clean != perturbed
    index_of = {int(v): i for i, v in enumerate(_values_of(case_list)) if i > 0}
    for position, (src, dst) in enumerate(zip(sources, destinations)):
        class_index = index_of.get(position + 1)
        if not changed.any():
            copy_file(src, dst)
            continue
        raw, image = read_raw(src)
        mask = np.asarray(raw).reshape(clean.shape)
        target = changed & (perturbed == class_index) if class_index is not None else np.zeros_like(changed)
        cleared = changed & ~target & (mask != 0)
        if class_index is None:
            cleared &= perturbed != 0  # an unselected mask only yields to a selected class
        added = target & (mask == 0)
        if not cleared.any() and not added.any():
            copy_file(src, dst)
            continue
        new = mask.copy()
        new[cleared] = 0
        new[added] = 1
        save_like(image, new, dst)


# --------------------------------------------------------------------------- other files


def link_or_copy(src: Path, dst: Path, copy: bool = False) -> str:
    """Make ``dst`` a relative symbolic link to ``src`` (or a copy when ``copy`` or when links
    are not possible). An existing link to the same target, or an existing copy of the same
    size, is kept. Returns ``"link"`` or ``"copy"``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(src, dst.parent)
    if not copy:
        if dst.is_symlink() and os.readlink(dst) == target:
            return "link"
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.lnk")
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(target, tmp, target_is_directory=src.is_dir())
            os.replace(tmp, dst)
            return "link"
        except (OSError, NotImplementedError):
            tmp.unlink(missing_ok=True)
    if src.is_dir():
        if not dst.exists():
            shutil.copytree(src, dst, symlinks=False)
        return "copy"
    if dst.is_file() and not dst.is_symlink() and dst.stat().st_size == src.stat().st_size:
        return "copy"
    copy_file(src, dst)
    return "copy"


def _copy_metadata(src: Path, dst: Path, root: Path, dst_root: Path) -> None:
    data = src.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        copy_file(src, dst)
        return
    rewritten = text.replace(str(root), str(dst_root))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        tmp.write_bytes(rewritten.encode("utf-8"))


def mirror_other_files(root: Path, dst: Path, labels: Mapping[Path, Path], copy_images: bool) -> None:
    """Mirror every file of the dataset folder that is not a case's label (see the module doc).

    Hidden files and folders, and the top-level ``manifest.csv`` and ``perturb_plan.yaml`` of
    the source, are skipped.
    """
    root = normalise_path(root)
    label_dirs = {p.parent for p in labels}
    for folder, dirnames, filenames in os.walk(root):
        here = Path(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in list(dirnames):
            if (here / name).is_symlink():  # os.walk does not enter linked folders: mirror them whole
                dirnames.remove(name)
                link_or_copy(here / name, dst / (here / name).relative_to(root), copy_images)
        for name in sorted(filenames):
            src = here / name
            if name.startswith(".") or src in labels or (here == root and name in OWN_FILES):
                continue
            out = dst / src.relative_to(root)
            if src.suffix.lower() in METADATA_SUFFIXES and src.stat().st_size <= _METADATA_MAX_BYTES:
                _copy_metadata(src, out, root, normalise_path(dst))
            elif here in label_dirs:
                copy_file(src, out)  # annotations beside the labels are copied, like the labels
            else:
                link_or_copy(src, out, copy_images)


# --------------------------------------------------------------------------- CSV case lists


def _rewrite_cell(cell: str, src_dir: Path, dst_dir: Path, root: Path, dst: Path, labels: Mapping[Path, Path]) -> str:
    text = cell.strip()
    if not text:
        return cell
    given = Path(text)
    full = normalise_path(given if given.is_absolute() else src_dir / given)
    if not (full.is_file() or full.is_symlink()):
        return cell
    target = labels.get(full)
    if target is None and _inside(full, root):
        target = dst / full.relative_to(root)
    if target is None:  # a file outside the dataset folder stays where it is
        return str(full) if not given.is_absolute() else cell
    return str(target) if given.is_absolute() else os.path.relpath(target, dst_dir)


def rewrite_case_list(src_csv: Path, dst_csv: Path, root: Path, dst: Path, labels: Mapping[Path, Path]) -> None:
    """Copy a CSV case list so that each path cell leads, from ``dst_csv``, to the copy's file
    (labels and files inside the dataset folder) or to the original (files outside it)."""
    text = src_csv.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = ";" if first.count(";") > first.count(",") else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    root, dst_norm = normalise_path(root), normalise_path(dst)
    src_dir, dst_dir = normalise_path(src_csv).parent, normalise_path(dst_csv).parent
    out = [rows[0]] + [[_rewrite_cell(c, src_dir, dst_dir, root, dst_norm, labels) for c in row] for row in rows[1:]]
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(out)
    dst_csv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst_csv) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
