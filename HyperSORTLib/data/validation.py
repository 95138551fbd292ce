"""Dataset checks run by ``hypersort check-data`` and before ``hypersort train``.

Per case (each problem names the case and the file):

==================  ===============================================================================
problem             meaning
==================  ===============================================================================
duplicate id        two or more cases share an id (every one of them is reported)
missing file        the image, label or a mask file does not exist
no annotation       the case has neither a label file nor masks
unreadable          the header cannot be parsed (not a NIfTI file, corrupt header)
truncated           the file is shorter than its header declares (cut-off download, bad gzip, a
                    tiny file declaring a huge volume), or its voxels cannot be read completely
not 3D              the volume is not 3D (a 4D file with one volume counts as 3D)
bad affine          the affine is not finite or is singular
absurd spacing      a voxel size outside [0.05, 20] mm (or not finite)
shape mismatch      label or mask grid shape differs from the image's
affine mismatch     label or mask affine differs from the image's (beyond 1% of a voxel)
NaN/inf             the image holds NaN or infinite values
label values        label values outside the class map, or non-integer values
empty label         no voxel of any selected class
==================  ===============================================================================

With ``deep=True`` the dataset as a whole is checked too: a selected class that no readable
annotation holds is an ``absent class`` problem of case ``(dataset)`` (:data:`DATASET_ID`);
``allow_empty`` does not silence it, and leaving cases out cannot fix it.

Files are opened with :func:`HyperSORTLib.utils.nifti.open_nifti`: headers only, and a file
that cannot hold the data its header declares (for ``.nii.gz``, the gzip trailer's length) is
reported as truncated before any voxel is read, so a small file declaring a huge volume costs
no memory. The voxel checks (NaN/inf, label values, empty label, unreadable data) read the
data; ``deep=False`` skips them. Cases are checked in parallel threads,
and with a :class:`~HyperSORTLib.data.cache.PreprocessCache` each case's result is remembered
until one of its files changes.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from HyperSORTLib.data.cases import CaseList, CaseRecord
from HyperSORTLib.data.labels import LabelError, affines_match, apply_label_values, label_dtype
from HyperSORTLib.utils.nifti import SPACING_RANGE_MM, NiftiSizeError, affine_problem, open_nifti, voxel_sizes

log = logging.getLogger(__name__)

__all__ = ["SPACING_RANGE_MM", "CHECKS_VERSION", "Problem", "CheckReport", "check_case", "check_cases"]

#: Bumped when the checks change, so remembered results are recomputed.
CHECKS_VERSION = 2

#: The ``case_id`` of problems of the dataset as a whole.
DATASET_ID = "(dataset)"


@dataclass(frozen=True)
class Problem:
    """One problem of one case."""

    case_id: str
    kind: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"case_id": self.case_id, "kind": self.kind, "detail": self.detail}


@dataclass
class CheckReport:
    """The result of :func:`check_cases`."""

    n_cases: int
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    cached: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_case_ids(self) -> tuple[str, ...]:
        """The ids of the cases with at least one problem, in report order, each once."""
        return tuple(dict.fromkeys(p.case_id for p in self.problems if p.case_id != DATASET_ID))

    @property
    def dataset_problems(self) -> list[Problem]:
        """Problems of the dataset as a whole (e.g. a selected class in no label); leaving cases
        out cannot fix them."""
        return [p for p in self.problems if p.case_id == DATASET_ID]

    def summary(self) -> str:
        if self.ok:
            return f"{self.n_cases} cases checked in {self.seconds:.1f} s: no problems."
        kinds = Counter(p.kind for p in self.problems)
        listed = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        dataset = f", {len(self.dataset_problems)} dataset problem(s)" if self.dataset_problems else ""
        return (f"{self.n_cases} cases checked in {self.seconds:.1f} s: {len(self.bad_case_ids)} bad "
                f"case(s){dataset} ({listed}).")

    def table(self, max_detail: int = 160) -> str:
        """The problems as an aligned text table (case, problem, details)."""
        rows = [("case", "problem", "details")]
        for p in self.problems:
            detail = p.detail if len(p.detail) <= max_detail else p.detail[: max_detail - 3] + "..."
            rows.append((p.case_id, p.kind, detail))
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in rows]
        lines.insert(1, f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 7}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ per case
def _affine_close(a: np.ndarray, b: np.ndarray) -> bool:
    return affines_match(a, b, voxel_sizes(a))


def _read_voxels(image: Any) -> np.ndarray:
    """The stored (unscaled) voxels: reads the whole file without widening integer types."""
    proxy = image.dataobj
    return np.asarray(proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else proxy)


def check_case(case: CaseRecord, case_list: CaseList, deep: bool = True) -> list[Problem]:
    """All problems of one case (an empty list when it is fine)."""
    return _check_case(case, case_list, deep)[0]


def _check_case(case: CaseRecord, case_list: CaseList, deep: bool) -> tuple[list[Problem], list[int] | None]:
    """The case's problems, and the class indices its annotation holds (``None``: not read)."""
    cid = case.case_id
    problems: list[Problem] = []
    add = lambda kind, detail: problems.append(Problem(cid, kind, detail))  # noqa: E731
    files: list[tuple[str, Path]] = [("image", Path(case.image))]
    if case.label is not None:
        files.append(("label", Path(case.label)))
    elif case.masks:
        files += [("mask", Path(m)) for m in case.masks]
    else:
        add("no annotation", "the case has neither a label file nor masks")
    missing = [(role, p) for role, p in files if not p.is_file()]
    for role, path in missing:
        add("missing file", f"{role} {path} does not exist")
    if missing:
        return problems, None

    images: dict[Path, Any] = {}
    for role, path in files:
        try:
            image = open_nifti(path, role)
        except NiftiSizeError as exc:  # from the header and file size alone, before reading voxels
            add("truncated", str(exc))
            continue
        except Exception as exc:
            add("unreadable", str(exc) if isinstance(exc, ValueError) else f"{role} {path}: {exc}")
            continue
        shape = image.shape
        if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
            add("not 3D", f"{role} {path} has shape {shape}; expected a 3D volume")
            continue
        problem = affine_problem(image.affine)
        if problem is not None:
            kind = "absurd spacing" if problem.startswith("voxel size") else "bad affine"
            add(kind, f"{role} {path}: {problem}")
            continue
        images[path] = image
    if len(images) < len(files):
        return problems, None

    reference = images[Path(case.image)]
    ref_shape, ref_affine = reference.shape[:3], np.asarray(reference.affine)
    for role, path in files[1:]:
        other = images[path]
        if other.shape[:3] != ref_shape:
            add("shape mismatch", f"{role} {path} has shape {other.shape[:3]}, image {case.image} has {ref_shape}")
        elif not _affine_close(np.asarray(other.affine), ref_affine):
            diff = float(np.abs(np.asarray(other.affine) - ref_affine).max())
            add("affine mismatch", f"{role} {path} and image {case.image} have different affines "
                                   f"(largest difference {diff:.4g})")
    if problems or not deep:
        return problems, None

    # voxel checks
    try:
        raw = _read_voxels(reference)
    except Exception as exc:
        add("truncated", f"image {case.image}: cannot read its voxels: {exc}")
        raw = None
    if raw is not None:
        slope = float(getattr(reference.dataobj, "slope", 1.0))
        inter = float(getattr(reference.dataobj, "inter", 0.0))
        if raw.dtype.kind in "fc" and not np.isfinite(raw).all():
            bad = int(np.size(raw) - np.count_nonzero(np.isfinite(raw)))
            add("NaN/inf", f"image {case.image} has {bad} NaN or infinite voxels")
        elif not (np.isfinite(slope) and np.isfinite(inter)):
            add("NaN/inf", f"image {case.image} has a non-finite intensity scaling (slope {slope}, inter {inter})")
        del raw

    num_classes = len(case_list.class_names)
    values: np.ndarray | None = None
    if case.label is not None:
        try:
            data = np.asanyarray(images[Path(case.label)].dataobj)
        except Exception as exc:
            add("truncated", f"label {case.label}: cannot read its voxels: {exc}")
            return problems, None
        data = data.reshape(data.shape[:3])
        if data.dtype.kind == "f":
            rounded = np.rint(data)
            if not np.isfinite(data).all() or not np.array_equal(rounded, data):
                add("label values", f"label {case.label} holds non-integer or non-finite values")
                return problems, None
            data = rounded.astype(np.int64)
        values = data
    else:
        values = np.zeros(ref_shape, label_dtype(len(case.masks) + 1))
        for position, path in enumerate(case.masks):
            try:
                mask = np.asanyarray(images[Path(path)].dataobj).reshape(ref_shape) != 0
            except Exception as exc:
                add("truncated", f"mask {path}: cannot read its voxels: {exc}")
                return problems, None
            values[mask & (values == 0)] = position + 1
    declared = case_list.declared_values
    if declared is not None and case_list.label_values is not None and case.label is not None:
        found = np.unique(values)
        undeclared = found[~np.isin(found, np.asarray(declared))]
        if undeclared.size:
            add("label values", f"label {case.label} has values {undeclared[:10].tolist()} that the dataset's "
                                f"class map does not declare ({min(declared)}..{max(declared)})")
            return problems, None
    try:
        classes = apply_label_values(values, case_list.label_values, num_classes, f"label {case.label}")
    except LabelError as exc:
        found = np.unique(values)
        bad = found[(found < 0) | (found >= num_classes)]
        names = ", ".join(case_list.class_names[:6]) + (", ..." if num_classes > 6 else "")
        add("label values", f"label {case.label} has values {bad[:10].tolist()} outside the class map "
                            f"0..{num_classes - 1} ({names})" if bad.size else str(exc))
        return problems, None
    present = [int(v) for v in np.unique(classes)]
    if not classes.any():
        where = f"label {case.label}" if case.label is not None else f"masks in {Path(case.masks[0]).parent}"
        add("empty label", f"{where}: no voxel of {', '.join(case_list.class_names[1:6])}"
                           f"{', ...' if num_classes > 6 else ''}")
    return problems, present


def duplicate_id_problems(case_list: CaseList) -> list[Problem]:
    counts = Counter(case_list.case_ids)
    problems = []
    for position, case in enumerate(case_list.cases):
        if counts[case.case_id] > 1:
            problems.append(Problem(case.case_id, "duplicate id",
                                    f"{counts[case.case_id]} cases have this id (this one: image {case.image})"))
    return problems


def absent_class_problems(case_list: CaseList, present: list[list[int] | None]) -> list[Problem]:
    """One dataset problem per selected class that no readable annotation holds.

    ``present[i]``: the class indices of case ``i``'s annotation (``None`` when it could not be
    read). Such a class would train a network that never sees it, usually a typo or a wrong
    label value in ``--classes``; leaving cases out cannot fix it.
    """
    read = [p for p in present if p is not None]
    if not read:
        return []
    found = set().union(*map(set, read))
    problems = []
    for index, name in enumerate(case_list.class_names[1:], start=1):
        if index not in found:
            value = case_list.label_values[index] if case_list.label_values is not None else index
            problems.append(Problem(DATASET_ID, "absent class",
                                    f"class '{name}' (label value {value}) occurs in none of the {len(read)} "
                                    f"readable annotations; check the class selection (--classes)"))
    return problems


def check_cases(case_list: CaseList, deep: bool = True, workers: int | None = None, cache: Any = None,
                progress: bool = False, allow_empty: bool = False) -> CheckReport:
    """Check every case of ``case_list``.

    Args:
        case_list: the cases and class map.
        deep: also read the voxels (truncation, NaN/inf, label values, empty labels).
        allow_empty: do not report empty labels (an audit may want to find them in the latent map).
        workers: threads (default: up to 8, one per CPU).
        cache: a :class:`~HyperSORTLib.data.cache.PreprocessCache` remembering each case's
            result until one of its files changes, or ``None``.
        progress: show a progress bar.
    """
    start = time.perf_counter()
    report = CheckReport(len(case_list.cases))
    report.problems += duplicate_id_problems(case_list)
    keys = [cache.check_key(c, case_list, deep, CHECKS_VERSION) if cache is not None else None
            for c in case_list.cases]
    results: list[tuple[list[Problem], list[int] | None] | None] = [None] * len(case_list.cases)
    for i, key in enumerate(keys):
        if key is not None and isinstance(stored := cache.load_check(key), dict):
            results[i] = ([Problem(**p) for p in stored["problems"]], stored.get("classes_present"))
            report.cached += 1
    todo = [i for i, r in enumerate(results) if r is None]

    def run(i: int) -> tuple[list[Problem], list[int] | None]:
        try:
            return _check_case(case_list.cases[i], case_list, deep)
        except Exception as exc:  # a check that itself fails still names the case
            return [Problem(case_list.cases[i].case_id, "unreadable", f"{type(exc).__name__}: {exc}")], None

    workers = workers or min(8, os.cpu_count() or 1)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="checking", unit="case")
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for i, result in zip(todo, pool.map(run, todo)):
                results[i] = result
                if keys[i] is not None:
                    try:
                        cache.store_check(keys[i], {"problems": [p.to_dict() for p in result[0]],
                                                    "classes_present": result[1]})
                    except OSError as exc:  # a read-only cache only costs time
                        log.warning("Cannot write check results to %s: %s", cache.root, exc)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    for problems, _ in results:
        report.problems += [p for p in problems if not (allow_empty and p.kind == "empty label")]
    if deep:
        report.problems += absent_class_problems(case_list, [present for _, present in results])
    report.seconds = time.perf_counter() - start
    return report
