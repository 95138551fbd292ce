"""The review queue: a reviewer's verdicts on the ranked suspects of an audit.

``hypersort analyze`` ranks the training samples (``analysis/samples.csv``); a reviewer looks at
each suspect and decides. Verdicts go to ``RUN/analysis/review.csv`` (:data:`REVIEW_HEADER`), one
row per case, rewritten atomically after every verdict, so a review can stop at any moment and
resume. This module has no GUI: the Slicer module and a browser front end share it.

Verdicts (:data:`VERDICTS`):

``correct``
    the label is right; the case stays.
``wrong``
    the label is wrong; the case leaves the training list and goes to the re-annotation list.
``style``
    the label follows a different annotation style; the case stays, the style is noted.

Example:
    >>> session = ReviewSession("runs/liver", reviewer="dr.a")  # doctest: +SKIP
    >>> session.record(session.next_case(), "wrong", note="left lobe missing")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from HyperSORTLib import rundir
from HyperSORTLib.utils.io import atomic_write_text, csv_text

VERDICTS = ("correct", "wrong", "style")
#: What each verdict means, for buttons and help texts.
VERDICT_LABELS = {"correct": "label correct", "wrong": "label wrong", "style": "different style"}
REVIEW_HEADER = ("case_id", "verdict", "note", "reviewer", "time")


class ReviewError(ValueError):
    """A review file or a verdict is invalid; the message names the file, case and value."""


@dataclass(frozen=True)
class Verdict:
    """One reviewer's decision on one case."""

    case_id: str
    verdict: str
    note: str = ""
    reviewer: str = ""
    time: str = ""

    def row(self) -> list[str]:
        return [self.case_id, self.verdict, self.note, self.reviewer, self.time]


@dataclass(frozen=True)
class Suspect:
    """A training sample of the audit, with its rank (1 = most suspicious)."""

    case_id: str
    rank: int
    suspicion: float
    cluster: str


def check_verdict(verdict: str, where: str) -> str:
    if verdict not in VERDICTS:
        raise ReviewError(f"{where}: expected a verdict among {', '.join(VERDICTS)}, found {verdict!r}.")
    return verdict


def read_review(path: str | Path) -> dict[str, Verdict]:
    """The verdicts of a ``review.csv`` by case id (empty when the file does not exist).

    Raises:
        ReviewError: another header, an unknown verdict, a row of another length, a case twice.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or tuple(rows[0]) != REVIEW_HEADER:
        raise ReviewError(f"{path}: expected the header {','.join(REVIEW_HEADER)}; found "
                          f"{','.join(rows[0]) if rows else 'an empty file'}.")
    verdicts: dict[str, Verdict] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(REVIEW_HEADER):
            raise ReviewError(f"{path}, line {line}: expected {len(REVIEW_HEADER)} values, found {len(row)}.")
        case_id = row[0]
        check_verdict(row[1], f"{path}, line {line}, case '{case_id}'")
        if case_id in verdicts:
            raise ReviewError(f"{path}, line {line}: case '{case_id}' has a second verdict.")
        verdicts[case_id] = Verdict(*row)
    return verdicts


def write_review(path: str | Path, verdicts: Iterable[Verdict]) -> None:
    """Replace ``path`` atomically with ``verdicts`` (one row per case)."""
    atomic_write_text(path, csv_text(REVIEW_HEADER, (v.row() for v in verdicts)))


def review_path(run_dir: str | Path) -> Path:
    return rundir.analysis_dir(run_dir) / rundir.REVIEW_FILE


def read_suspects(run_dir: str | Path) -> list[Suspect]:
    """The audited samples of a run, most suspicious first (``analysis/samples.csv``)."""
    path = rundir.analysis_dir(run_dir) / rundir.SAMPLES_FILE
    if not path.is_file():
        raise ReviewError(f"{path} does not exist: run 'hypersort analyze --run {run_dir}' first.")
    table = rundir.read_samples_table(path)
    for column in ("rank", "suspicion"):
        if column not in table:
            raise ReviewError(f"{path}: expected a '{column}' column (written by hypersort analyze); found "
                              f"{', '.join(table)}.")
    suspects = []
    for index, case_id in enumerate(table["case_id"]):
        try:
            rank, suspicion = int(table["rank"][index]), float(table["suspicion"][index] or "nan")
        except ValueError as error:
            raise ReviewError(f"{path}, case '{case_id}': rank and suspicion must be numbers ({error}).") from error
        suspects.append(Suspect(case_id, rank, suspicion, (table.get("cluster") or [""] * len(table["case_id"]))[index]))
    return sorted(suspects, key=lambda s: (s.rank, -s.suspicion if not math.isnan(s.suspicion) else 0.0))


class ReviewSession:
    """A reviewer going through a run's suspects; every verdict is saved at once.

    Args:
        run_dir: the run (with ``analysis/samples.csv``).
        reviewer: who decides (written with every verdict).
        path: the review file (default ``RUN/analysis/review.csv``); an existing one is resumed.
        clock: returns the time stamp of a verdict (UTC ISO 8601 by default).
    """

    def __init__(self, run_dir: str | Path, reviewer: str = "", path: str | Path | None = None,
                 clock=rundir.utc_now) -> None:
        self.run_dir = Path(run_dir)
        self.reviewer = str(reviewer)
        self.path = Path(path) if path is not None else review_path(self.run_dir)
        self.clock = clock
        self.suspects = read_suspects(self.run_dir)
        self._known = {s.case_id for s in self.suspects}
        self.verdicts = read_review(self.path)
        unknown = sorted(set(self.verdicts) - self._known)
        if unknown:
            raise ReviewError(f"{self.path}: cases {', '.join(unknown[:5])} are not samples of {self.run_dir}.")

    def members(self, cluster: str) -> list[Suspect]:
        """The samples of one cluster (annotation style), most suspicious first."""
        return [s for s in self.suspects if s.cluster == str(cluster)]

    def clusters(self) -> list[str]:
        return sorted({s.cluster for s in self.suspects if s.cluster != ""}, key=lambda c: (len(c), c))

    def verdict(self, case_id: str) -> Verdict | None:
        return self.verdicts.get(case_id)

    def next_case(self, after: str | None = None) -> str | None:
        """The most suspicious case without a verdict (after ``after`` in the ranking, if given)."""
        ids = [s.case_id for s in self.suspects]
        start = ids.index(after) + 1 if after in ids else 0
        for case_id in ids[start:] + ids[:start]:
            if case_id not in self.verdicts:
                return case_id
        return None

    def record(self, case_id: str, verdict: str, note: str = "") -> Verdict:
        """Save ``verdict`` on ``case_id`` (replacing an earlier one) and rewrite the review file."""
        if case_id not in self._known:
            raise ReviewError(f"Case '{case_id}' is not a sample of {self.run_dir} (see analysis/samples.csv).")
        check_verdict(verdict, f"Case '{case_id}'")
        entry = Verdict(case_id, verdict, str(note).replace("\n", " ").strip(), self.reviewer, self.clock())
        verdicts = {**self.verdicts, case_id: entry}
        order = {s.case_id: i for i, s in enumerate(self.suspects)}
        write_review(self.path, sorted(verdicts.values(), key=lambda v: order[v.case_id]))
        self.verdicts = verdicts  # only once the file holds it
        return entry

    def counts(self) -> Mapping[str, int]:
        """Verdicts so far by kind, and ``remaining``."""
        counts = {v: 0 for v in VERDICTS}
        for entry in self.verdicts.values():
            counts[entry.verdict] += 1
        return {**counts, "remaining": len(self.suspects) - len(self.verdicts)}
