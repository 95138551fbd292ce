"""Apply a perturbation plan to a dataset: a perturbed copy in the same layout, plus a manifest.

:func:`perturb_dataset` reads every case's annotation on its own voxel grid (class indices, the
spacing from its header, never reoriented), applies the perturbations the plan assigns to it,
and writes the copy described in :mod:`HyperSORTLib.perturbation.dataset_io`. Beside the copy:

* ``manifest.csv``: one row per case (columns in :mod:`HyperSORTLib.data.manifest`): group,
  whether erroneous, the perturbations and their drawn parameters, and the Dice and volume
  change of every foreground class against the original label;
* ``perturb_plan.yaml``: the plan, as given.

The source is never written to. A run that is interrupted leaves complete files only and is
completed by running the same command again (finished cases are kept unless their source label,
masks, donors or image changed since: see :func:`source_fingerprint`); a destination holding
anything else is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from HyperSORTLib.data.cases import CaseList, CaseRecord
from HyperSORTLib.data.labels import load_label
from HyperSORTLib.data.manifest import MANIFEST_FILE, ManifestRow, manifest_header, write_manifest
from HyperSORTLib.metrics import label_overlap
from HyperSORTLib.perturbation.dataset_io import (
    STATE_DIR,
    copy_file,
    label_destinations,
    mirror_other_files,
    normalise_path,
    rewrite_case_list,
    write_label_file,
    write_masks,
)
from HyperSORTLib.perturbation.plan import CaseAssignment, DrawnStep, PerturbationPlan
from HyperSORTLib.perturbation.registry import SPECS
from HyperSORTLib.utils.io import atomic_write_json, atomic_write_text, file_sha256

__all__ = ["PerturbResult", "perturb_dataset"]

class DestinationError(ValueError):
    """The destination folder cannot receive the perturbed copy; the message says why."""


@dataclass(frozen=True)
class PerturbResult:
    """What :func:`perturb_dataset` wrote.

    Attributes:
        dst: the perturbed copy.
        manifest: its ``manifest.csv``.
        groups: number of cases per group.
        reused: cases kept from an earlier, interrupted run.
    """

    dst: Path
    manifest: Path
    groups: dict[str, int]
    reused: int

    def summary(self) -> str:
        counts = ", ".join(f"{g}: {n}" for g, n in self.groups.items())
        extra = f" ({self.reused} kept from an earlier run)" if self.reused else ""
        return f"Perturbed copy in {self.dst} ({counts}){extra}; manifest: {self.manifest}"


# --------------------------------------------------------------------------- metrics and rows


def _row(assignment: CaseAssignment, steps: Sequence[DrawnStep], dice: dict, change: dict) -> ManifestRow:
    if not steps:
        name, params = "none", {}
    elif len(steps) == 1:
        name, params = steps[0].name, steps[0].params
    else:
        name, params = "+".join(s.name for s in steps), [s.params for s in steps]
    return ManifestRow(assignment.case_id, assignment.group, assignment.erroneous, name, params, dice, change)


# --------------------------------------------------------------------------- one case


@dataclass(frozen=True)
class _CaseTask:
    case: CaseRecord
    assignment: CaseAssignment
    steps: tuple[DrawnStep, ...]
    donors: dict[str, CaseRecord]
    outputs: tuple[tuple[Path, Path], ...]  # (source label/mask, destination)


def _perturb_case(task: _CaseTask, case_list: CaseList) -> list[str]:
    """Read, perturb and write one case; returns its manifest row."""
    clean, image = load_label(task.case, case_list)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    label = clean
    for step in task.steps:
        kwargs = dict(step.kwargs)
        if step.donor is not None:
            donor, _ = load_label(task.donors[step.donor], case_list)
            kwargs["donor"] = donor
        try:
            label = SPECS[step.name].apply(label, spacing, kwargs)
        except ValueError as exc:
            raise ValueError(f"Case '{task.case.case_id}', {step.name}: {exc}") from exc
    sources = [s for s, _ in task.outputs]
    destinations = [d for _, d in task.outputs]
    if task.case.label is not None:
        write_label_file(case_list, sources[0], destinations[0], clean, label)
    else:
        write_masks(case_list, sources, destinations, clean, label)
    dice, change = label_overlap(clean, label, len(case_list.class_names), spacing)
    return _row(task.assignment, task.steps, dice, change).cells(len(case_list.class_names))


def _run_task(args: tuple[_CaseTask, CaseList, Path]) -> tuple[str, list[str]]:
    task, case_list, state = args
    fingerprint = source_fingerprint(task)
    row = _perturb_case(task, case_list)
    atomic_write_json(_row_file(state, task.case.case_id),
                      {"case_id": task.case.case_id, "row": row, "outputs": [str(d) for _, d in task.outputs],
                       "sources": fingerprint})
    return task.case.case_id, row


def _file_digest(path: Path) -> list:
    return [path.stat().st_size, file_sha256(path)]


def source_fingerprint(task: _CaseTask) -> dict:
    """What a case's perturbed copy was made from: size and SHA-256 of its label or mask files and
    of its donors' labels, size and modification time of its image (too large to hash on every
    resume; the copy only links or copies it)."""
    files = [s for s, _ in task.outputs]
    for donor in task.donors.values():
        files += ([donor.label] if donor.label is not None else []) + list(donor.masks)
    image = Path(task.case.image)
    stat = image.stat() if image.exists() else None
    return {"labels": {str(normalise_path(f)): _file_digest(Path(f)) for f in files},
            "image": [str(normalise_path(image)), stat.st_size if stat else None, stat.st_mtime_ns if stat else None]}


def _row_file(state: Path, case_id: str) -> Path:
    return state / "cases" / (hashlib.sha1(case_id.encode("utf-8")).hexdigest() + ".json")


def _finished_row(state: Path, task: _CaseTask) -> list[str] | None:
    """The manifest row of a case finished by an earlier run, or ``None`` when it must be redone:
    no record, an output file missing, or a source file changed since."""
    case_id = task.case.case_id
    path = _row_file(state, case_id)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if record.get("case_id") != case_id or not all(Path(p).exists() for p in record.get("outputs", [])):
        return None
    try:
        if record.get("sources") != json.loads(json.dumps(source_fingerprint(task))):
            return None
    except OSError:
        return None
    return record.get("row")


# --------------------------------------------------------------------------- destination checks


def _source_record(case_list: CaseList) -> dict:
    source = dict(case_list.source or {})
    return {"root": str(Path(case_list.root).resolve()), "layout": case_list.layout,
            "format": source.get("format"), "path": source.get("path"), "classes": list(case_list.class_names),
            "label_values": list(case_list.label_values) if case_list.label_values is not None else None}


def _state_record(plan: PerturbationPlan, case_list: CaseList) -> dict:
    return {"plan": json.loads(json.dumps(plan.to_dict(), sort_keys=True)), "source": _source_record(case_list)}


def _check_destination(case_list: CaseList, dst: Path, plan: PerturbationPlan, overwrite: bool) -> None:
    root = Path(case_list.root).resolve()
    target = dst.resolve()
    # A CSV list is a file: a destination beside it in its folder is fine, the folder itself is not.
    inside = target == root or (case_list.layout != "csv" and root in target.parents)
    if inside:
        raise DestinationError(f"The destination {dst} is inside the source dataset {root}; a perturbed copy must "
                               f"be written elsewhere (the source is never modified).")
    if target in root.parents:
        raise DestinationError(f"The source dataset {root} is inside the destination {dst}; choose a destination "
                               f"outside the source.")
    for case in case_list.cases:
        for path in ([case.label] if case.label is not None else []) + list(case.masks):
            resolved = Path(path).resolve()
            if resolved == target or target in resolved.parents:
                raise DestinationError(f"Case '{case.case_id}': its file {path} lies inside the destination {dst}.")
    if dst.exists() and not dst.is_dir():
        raise DestinationError(f"The destination {dst} exists and is not a folder.")
    if overwrite or not dst.exists() or not any(dst.iterdir()):
        return
    state_file = dst / STATE_DIR / "state.json"
    if not state_file.is_file():
        raise DestinationError(f"The destination {dst} is not empty and is not a perturbed copy made by "
                               f"'hypersort perturb'; choose an empty folder or pass --overwrite.")
    if not _same_run(state_file, plan, case_list):
        raise DestinationError(f"The destination {dst} holds a perturbed copy made with another plan or from "
                               f"another source (dataset, format or classes); choose another folder or pass "
                               f"--overwrite to write over it.")


def _same_run(state_file: Path, plan: PerturbationPlan, case_list: CaseList) -> bool:
    """Whether ``state_file`` records this plan (equal once parsed) on this source."""
    try:
        previous = json.loads(state_file.read_text(encoding="utf-8"))
        previous_plan = PerturbationPlan.from_dict(previous["plan"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        return False
    return previous_plan == plan and previous.get("source") == _state_record(plan, case_list)["source"]


# --------------------------------------------------------------------------- the whole dataset


def perturb_dataset(
    case_list: CaseList,
    dst: str | Path,
    plan: PerturbationPlan,
    *,
    copy_images: bool = False,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
    plan_text: str | None = None,
) -> PerturbResult:
    """Write a perturbed copy of a dataset and its manifest (see the module docstring).

    Args:
        case_list: the source dataset (e.g. from :func:`HyperSORTLib.data.read_dataset`).
        dst: destination folder (created; must not be inside the source or contain it).
        plan: the validated plan.
        copy_images: copy images and other data files instead of linking them.
        workers: processes perturbing cases in parallel (1: in this process). The result does
            not depend on it.
        overwrite: write into a non-empty destination that is not an earlier run of this plan
            on this source (files of the same name are replaced, others are left).
        progress: show a progress bar over the cases.
        plan_text: the plan file's text, written verbatim to ``perturb_plan.yaml`` (default: the
            plan serialised as YAML).

    Returns:
        A :class:`PerturbResult`.

    Raises:
        DestinationError: the destination is inside the source (or the reverse), or holds
            something else and ``overwrite`` is false.
        PlanError: the plan names classes or cases the dataset does not have, or needs more cases.
        FileNotFoundError / ValueError: a case's label cannot be read (the message names it).
    """
    dst = normalise_path(dst)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, found {workers!r}.")
    if not case_list.cases:
        raise ValueError(f"The dataset {case_list.root} has no cases to perturb.")
    plan.check_classes(case_list.class_names)
    case_ids = list(case_list.case_ids)
    assignments = plan.assign(case_ids)
    _check_destination(case_list, dst, plan, overwrite)

    state = dst / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state / "state.json", _state_record(plan, case_list))
    atomic_write_text(dst / "perturb_plan.yaml", plan_text if plan_text is not None else plan.to_yaml())

    labels = label_destinations(case_list, dst)
    root = Path(case_list.root)
    if case_list.layout == "csv":
        csv_path = Path((case_list.source or {}).get("path", ""))
        if csv_path.is_file():
            rewrite_case_list(csv_path, dst / csv_path.name, root, dst, labels)
        if (root / "dataset.json").is_file():  # names the list's classes
            copy_file(root / "dataset.json", dst / "dataset.json")
    else:
        mirror_other_files(root, dst, labels, copy_images)

    by_id = {c.case_id: c for c in case_list.cases}
    rows: dict[str, list[str]] = {}
    tasks = []
    for case, assignment in zip(case_list.cases, assignments):
        steps = tuple(plan.draw(assignment, case_list.class_names, case_ids))
        donors = {s.donor: by_id[s.donor] for s in steps if s.donor is not None}
        files = ([case.label] if case.label is not None else []) + list(case.masks)
        outputs = tuple((normalise_path(f), labels[normalise_path(f)]) for f in files)
        task = _CaseTask(case, assignment, steps, donors, outputs)
        row = None if overwrite else _finished_row(state, task)
        if row is not None and len(row) == len(manifest_header(case_list.class_names)):
            rows[case.case_id] = row
            continue
        tasks.append(task)
    reused = len(rows)
    rows.update(_run_tasks(tasks, case_list, state, workers, progress))

    manifest = write_manifest(dst / MANIFEST_FILE, [rows[c] for c in case_ids], case_list.class_names)
    groups: dict[str, int] = {}
    for a in assignments:
        groups[a.group] = groups.get(a.group, 0) + 1
    return PerturbResult(dst, manifest, groups, reused)


def _run_tasks(tasks: list[_CaseTask], case_list: CaseList, state: Path, workers: int,
               progress: bool) -> dict[str, list[str]]:
    from tqdm.auto import tqdm

    rows: dict[str, list[str]] = {}
    bar = tqdm(total=len(tasks), desc="perturb", unit="case", disable=not progress or not tasks)
    try:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                case_id, row = _run_task((task, case_list, state))
                rows[case_id] = row
                bar.update()
            return rows
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
        try:
            pending = {pool.submit(_run_task, (task, case_list, state)) for task in tasks}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    case_id, row = future.result()  # re-raises a case's error, naming the case
                    rows[case_id] = row
                    bar.update()
        finally:
            # On an error or Ctrl-C, cases not started are dropped; finished ones are recorded in
            # the state folder and the same command resumes from them.
            pool.shutdown(wait=True, cancel_futures=True)
        return rows
    finally:
        bar.close()
