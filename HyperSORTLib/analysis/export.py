"""Export a reviewed dataset: the training list without the cases whose label is wrong, and the
list of cases to re-annotate.

:func:`export_reviewed` reads a run's cases (from its recorded data source, or ``data``) and a
``review.csv`` (:mod:`HyperSORTLib.analysis.review`) and writes into ``out``:

``cases.csv``
    the kept cases (every case not judged ``wrong``): ``id,image,label`` with absolute paths, a
    CSV case list ``hypersort train --data`` reads (mask datasets add a ``masks`` column, ``;``
    separated, and leave ``label`` empty);
``reannotate.csv``
    the cases judged ``wrong``: ``case_id,note,reviewer,time,image,label``;
and, with ``layout="dataset"``, the kept cases in the dataset's own layout: each file at its
path relative to the dataset folder, as a relative symbolic link (or a copy with ``copy=True``),
with an nnU-Net ``dataset.json`` whose ``numTraining`` counts the kept cases.

The source dataset is never written: ``out`` may not be inside it, and it may not be inside ``out``.
Existing outputs are replaced only with ``overwrite``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from HyperSORTLib import rundir
from HyperSORTLib.analysis.review import ReviewError, read_review
from HyperSORTLib.utils.io import atomic_write_text, check_output_folder, csv_text

CASES_FILE = "cases.csv"
REANNOTATE_FILE = "reannotate.csv"
LAYOUTS = ("csv", "dataset")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    kept: tuple[str, ...]
    reannotate: tuple[str, ...]
    files: tuple[Path, ...]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _case_files(case) -> list[Path]:
    return [Path(case.image), *([Path(case.label)] if case.label is not None else []), *map(Path, case.masks)]


def _dataset_files(case_list, kept) -> dict[Path, Path]:
    """Relative destination -> source of every file of the kept cases."""
    root = Path(case_list.root).resolve()
    files = {}
    for case in kept:
        for source in _case_files(case):
            if not _inside(source, root):
                raise ValueError(f"Case '{case.case_id}': {source} is outside the dataset folder {root}; export "
                                 "it with --format csv instead.")
            files[source.resolve().relative_to(root)] = source
    return files


def export_reviewed(run_dir: str | Path, out: str | Path, review: str | Path | None = None, data=None,
                    layout: str = "csv", copy: bool = False, overwrite: bool = False) -> ExportResult:
    """Write the reviewed case list (and the dataset layout) into ``out``; see the module docstring.

    Args:
        run_dir: the trained run whose cases were reviewed.
        out: the folder to write (created).
        review: the review file (default ``RUN/analysis/review.csv``).
        data: a :class:`~HyperSORTLib.data.CaseList` of the run's cases, when the recorded data
            source moved (default: read from ``config.json``'s data source).
        layout: ``csv`` (the two lists) or ``dataset`` (also the kept cases in the source's layout).
        copy: with ``dataset``, copy files instead of linking them.
        overwrite: replace outputs found in ``out``.

    Raises:
        ValueError: a bad layout, a missing review, verdicts on cases the dataset does not have,
            ``out`` inside the source (or the reverse), existing outputs without ``overwrite``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, found {layout!r}.")
    run_dir, out = Path(run_dir), Path(out)
    review = Path(review) if review is not None else rundir.analysis_dir(run_dir) / rundir.REVIEW_FILE
    if not review.is_file():
        raise ReviewError(f"Review file {review} does not exist; review the suspects first (Slicer module).")
    verdicts = read_review(review)
    case_list = data
    if case_list is None:
        from HyperSORTLib.data.readers import case_list_from_source

        _, _, doc = rundir.read_run_config(run_dir)
        case_list = case_list_from_source(doc.get("data_source") or {})
    by_id = {case.case_id: case for case in case_list.cases}
    unknown = sorted(set(verdicts) - set(by_id))
    if unknown:
        raise ReviewError(f"{review}: cases {', '.join(unknown[:5])} are not in the dataset {case_list.root}.")
    source = Path(case_list.root)
    if _inside(out, source) or _inside(source, out):
        raise ValueError(f"--out {out} and the dataset {source} overlap; the source is never written: choose a "
                         "folder outside it.")
    wrong = [case_id for case_id in by_id if case_id in verdicts and verdicts[case_id].verdict == "wrong"]
    kept = case_list.without(wrong).cases
    files = _dataset_files(case_list, kept) if layout == "dataset" else {}
    top = sorted({CASES_FILE, REANNOTATE_FILE, *{str(p.parts[0]) for p in files}}
                 | ({"dataset.json"} if layout == "dataset" and (source / "dataset.json").is_file() else set()))
    check_output_folder(out, top, "hypersort export", overwrite)
    out.mkdir(parents=True, exist_ok=True)

    masks = any(case.masks for case in kept)
    header = ["id", "image", "label", *(["masks"] if masks else [])]
    rows = [[c.case_id, Path(c.image).resolve(), Path(c.label).resolve() if c.label is not None else "",
             *([";".join(str(Path(m).resolve()) for m in c.masks)] if masks else [])] for c in kept]
    atomic_write_text(out / CASES_FILE, csv_text(header, rows))
    atomic_write_text(out / REANNOTATE_FILE, csv_text(
        ["case_id", "note", "reviewer", "time", "image", "label"],
        [[i, verdicts[i].note, verdicts[i].reviewer, verdicts[i].time, Path(by_id[i].image).resolve(),
          Path(by_id[i].label).resolve() if by_id[i].label is not None else ""] for i in wrong]))
    written = [out / CASES_FILE, out / REANNOTATE_FILE]
    if layout == "dataset":
        from HyperSORTLib.perturbation.dataset_io import link_or_copy

        for relative, path in sorted(files.items()):
            link_or_copy(path, out / relative, copy=copy)
            written.append(out / relative)
        if (source / "dataset.json").is_file():
            meta = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
            if "numTraining" in meta:
                meta["numTraining"] = len(kept)
            atomic_write_text(out / "dataset.json", json.dumps(meta, indent=2) + "\n")
            written.append(out / "dataset.json")
    return ExportResult(out, tuple(c.case_id for c in kept), tuple(wrong), tuple(written))
