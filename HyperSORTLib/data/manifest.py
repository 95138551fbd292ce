"""The ground-truth manifest (``manifest.csv``): one writer and one reader.

``hypersort demo`` and ``hypersort perturb`` write a manifest beside the dataset they produce;
``hypersort analyze`` reads it to score an audit. One row per case, columns:

* ``case_id``, ``group`` (bias group name), ``erroneous`` (``1``/``0``);
* ``perturbation``: ``none``, a perturbation name, or names joined by ``+``;
* ``params``: compact JSON of the drawn parameters (an object, or a list of objects);
* ``dice_<class>`` then ``volume_change_<class>`` of every foreground class against the
  original label (six decimals, ``nan`` when undefined).

Only ``case_id``, ``group`` and ``erroneous`` are required when reading, so a hand-written
manifest of the true groups is enough for scoring.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from HyperSORTLib.utils.io import atomic_write_text

__all__ = ["MANIFEST_FILE", "MANIFEST_COLUMNS", "FIXED_COLUMNS", "Manifest", "ManifestRow", "manifest_header",
           "read_manifest", "read_manifest_rows", "write_manifest"]

#: File name of the manifest beside a generated or perturbed dataset.
MANIFEST_FILE = "manifest.csv"
#: Columns a manifest must have; others (perturbation, params, dice_*, ...) are kept for display.
MANIFEST_COLUMNS = ("case_id", "group", "erroneous")
#: Leading columns of a written manifest, before the per-class ``dice_*`` / ``volume_change_*``.
FIXED_COLUMNS = ("case_id", "group", "erroneous", "perturbation", "params")

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def manifest_header(class_names: Sequence[str]) -> list[str]:
    """Header of a manifest for labels named ``class_names`` (background first, not listed)."""
    names = list(class_names[1:])
    return [*FIXED_COLUMNS, *(f"dice_{n}" for n in names), *(f"volume_change_{n}" for n in names)]


@dataclass(frozen=True)
class ManifestRow:
    """One case of a manifest.

    Attributes:
        case_id: the case.
        group: its bias group.
        erroneous: whether it carries an individual gross error.
        perturbation: ``none``, a perturbation name, or names joined by ``+``.
        params: the drawn parameters (a mapping, or a list of mappings for several steps).
        dice: Dice against the original label, by foreground class id (1..K-1).
        volume_change: relative volume change against the original label, by class id.
    """

    case_id: str
    group: str
    erroneous: bool
    perturbation: str = "none"
    params: Any = field(default_factory=dict)
    dice: Mapping[int, float] = field(default_factory=dict)
    volume_change: Mapping[int, float] = field(default_factory=dict)

    def cells(self, num_classes: int) -> list[str]:
        """The row's CSV cells, in the order of :func:`manifest_header` for ``num_classes`` labels."""
        classes = range(1, num_classes)
        return [self.case_id, self.group, "1" if self.erroneous else "0", self.perturbation,
                json.dumps(self.params, separators=(",", ":"), sort_keys=True),
                *(_metric(self.dice.get(c, math.nan)) for c in classes),
                *(_metric(self.volume_change.get(c, math.nan)) for c in classes)]


def _metric(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6f}"


def write_manifest(path: str | Path, rows: Sequence[ManifestRow | Sequence[str]],
                   class_names: Sequence[str]) -> Path:
    """Write a manifest atomically; rows are :class:`ManifestRow` or cells from :meth:`ManifestRow.cells`.

    Raises:
        ValueError: a row of cells does not have one cell per column.
    """
    header = manifest_header(class_names)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = row.cells(len(class_names)) if isinstance(row, ManifestRow) else list(row)
        if len(cells) != len(header):
            raise ValueError(f"Manifest row of case {cells[:1]} has {len(cells)} cells; the header has "
                             f"{len(header)} ({', '.join(header)}).")
        writer.writerow(cells)
    path = Path(path)
    atomic_write_text(path, buffer.getvalue())
    return path


def read_manifest_rows(path: str | Path) -> list[dict[str, str]]:
    """Every row of a manifest as a dictionary of strings, in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a required column (:data:`MANIFEST_COLUMNS`) is missing, or a case id is
            empty or appears twice (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Manifest {path} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        missing = [c for c in MANIFEST_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"Manifest {path} lacks the column(s) {', '.join(missing)}; it must have "
                             f"{', '.join(MANIFEST_COLUMNS)} (found: {', '.join(columns) or 'no header'}).")
        rows: list[dict[str, str]] = []
        seen: set[str] = set()
        for line, row in enumerate(reader, start=2):
            case_id = (row.get("case_id") or "").strip()
            if not case_id:
                raise ValueError(f"Manifest {path}, line {line}: the case_id is empty.")
            if case_id in seen:
                raise ValueError(f"Manifest {path}, line {line}: case '{case_id}' appears twice.")
            seen.add(case_id)
            rows.append({k: (v or "") for k, v in row.items() if k is not None} | {"case_id": case_id})
    return rows


@dataclass(frozen=True)
class Manifest:
    """Ground truth per training case, in the run's case order.

    Attributes:
        path: the manifest file.
        groups: bias group of each case (e.g. ``clean``, ``liver_dilated``).
        erroneous: whether each case is an individual error.
        rows: every column of each case's row, as strings (for display).
    """

    path: Path
    groups: tuple[str, ...]
    erroneous: np.ndarray
    rows: tuple[dict[str, str], ...]

    def group_sizes(self) -> dict[str, int]:
        return {g: self.groups.count(g) for g in sorted(set(self.groups))}


def read_manifest(path: str | Path, case_ids: Sequence[str] | None = None) -> Manifest:
    """Read a manifest, aligned to ``case_ids`` (default: every row, in file order).

    Rows of cases that are not in ``case_ids`` are ignored; every listed case must have a row.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a required column is missing, a case id is duplicated or missing, or an
            ``erroneous`` value is not 1/0 (true/false).
    """
    path = Path(path)
    by_id = {row["case_id"]: row for row in read_manifest_rows(path)}
    case_ids = list(by_id) if case_ids is None else list(case_ids)
    absent = [c for c in case_ids if c not in by_id]
    if absent:
        shown = ", ".join(absent[:5]) + (f", ... ({len(absent)} in all)" if len(absent) > 5 else "")
        raise ValueError(f"Manifest {path} has no row for {len(absent)} of the run's {len(case_ids)} training "
                         f"case(s): {shown}.")
    rows = tuple(by_id[c] for c in case_ids)
    erroneous = np.zeros(len(rows), dtype=bool)
    for i, (case_id, row) in enumerate(zip(case_ids, rows)):
        value = row["erroneous"].strip().lower()
        if value not in _TRUE | _FALSE:
            raise ValueError(f"Manifest {path}, case '{case_id}': 'erroneous' must be 1 or 0 (true/false); "
                             f"found {row['erroneous']!r}.")
        erroneous[i] = value in _TRUE
    groups = tuple(row["group"].strip() for row in rows)
    return Manifest(path, groups, erroneous, rows)
