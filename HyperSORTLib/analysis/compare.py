"""Do two trainings on the same dataset find the same annotation styles? (``hypersort compare``)

A trained map can mix a style into another one: on some training seeds of the demo, four
dilated-liver cases sit inside the clean main mode, and the main mode's UNet fits their labels as
well as its clean members' labels, so no audit of that one run can tell. Training again with
another seed and comparing the two audits can: a case whose style company changes between the
runs is one whose style the map does not settle.

For every case, the *agreement* is the share of the other cases with which it is together (the
same style or isolated group) in both runs or apart in both, averaged over every pair of runs:
1.0 means the runs agree about everyone it is grouped with (the same measure as the
``style_stability`` of ``hypersort analyze --stability-seeds``, across trainings instead of mixture
fits). The adjusted Rand index of each pair of runs summarises the whole table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from HyperSORTLib import rundir
from HyperSORTLib.analysis.styles import company_agreement
from HyperSORTLib.utils.io import atomic_write_json, atomic_write_text, check_output_folder, csv_text, same_file

__all__ = ["StyleAgreement", "COMPARE_FILES", "compare_runs", "read_run_styles"]

AGREEMENT_CSV = "style_agreement.csv"
AGREEMENT_JSON = "style_agreement.json"
COMPARE_FILES = (AGREEMENT_CSV, AGREEMENT_JSON)
_FORMAT = "hypersort-style-agreement"


@dataclass(frozen=True)
class StyleAgreement:
    """The styles of several runs over the same cases, side by side.

    Attributes:
        runs: the run directories, in the order given.
        case_ids: the cases, in the first run's order.
        labels: ``[R, N]`` style or isolated-group ids per run (each run's own numbering).
        names: per run, per case, the row's name (``style 0 (main mode)``, ``isolated 4``).
        ari: ``[R, R]`` adjusted Rand index between the runs' groupings.
        agreement: ``[N]`` per case, the mean over pairs of runs of :func:`company_agreement`.
    """

    runs: tuple[Path, ...]
    case_ids: tuple[str, ...]
    labels: np.ndarray
    names: tuple[tuple[str, ...], ...]
    ari: np.ndarray
    agreement: np.ndarray

    def unsettled(self, below: float = 0.9) -> list[int]:
        """Indices of the cases whose agreement is below ``below``, least agreement first."""
        order = np.argsort(self.agreement, kind="stable")
        return [int(i) for i in order if self.agreement[i] < below]


def read_run_styles(run_dir: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """``(case_ids, labels, names)`` of a run's current audit (``RUN/analysis``).

    Raises:
        ValueError: not a run directory, no audit, or one made from other weights than the run's
            ``model.safetensors``, or a ``samples.csv`` without the ``cluster`` column.
    """
    run_dir = Path(run_dir)
    if not rundir.is_run_dir(run_dir):
        raise ValueError(f"{run_dir} is not a HyperSORT run directory (expected a {rundir.CONFIG_FILE} written by "
                         f"hypersort train).")
    out = rundir.analysis_dir(run_dir)
    samples_path, clusters_path = out / rundir.SAMPLES_FILE, out / rundir.CLUSTERS_FILE
    if not samples_path.is_file() or not clusters_path.is_file():
        raise ValueError(f"{run_dir}: no audit ({samples_path} or {clusters_path} is missing); run "
                         f"`hypersort analyze --run {run_dir}` first.")
    stale = rundir.stale_analysis_reason(run_dir)
    if stale is not None:
        raise ValueError(stale)
    samples = rundir.read_samples_table(samples_path)
    if "cluster" not in samples:
        raise ValueError(f"{samples_path}: expected a 'cluster' column (written by hypersort analyze); found "
                         f"{', '.join(samples)}.")
    dim = sum(1 for key in samples if key[:1] == "z" and key[1:].isdigit())
    rows = {info.cluster: info for info in rundir.read_clusters_table(clusters_path, dim)}
    try:
        labels = np.array([int(value) for value in samples["cluster"]])
    except ValueError:
        raise ValueError(f"{samples_path}: the 'cluster' column holds a value that is not an integer.") from None
    names = [rows[c].name if c in rows else rundir.style_name(c) for c in labels]
    return list(samples["case_id"]), labels, names


def _check_same_data(first: Path, other: Path) -> None:
    """Refuse two runs trained on different files under the same case ids (when both recorded them)."""
    prints = [rundir.read_run_config(run)[2].get("data_fingerprint") or {} for run in (first, other)]
    changes = rundir.fingerprint_changes(*prints) if all(prints) else []
    if changes:
        raise ValueError(f"{first} and {other} were trained on different files under the same case ids "
                         f"({rundir.describe_changes(changes)}); their styles cannot be compared case by case.")


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None,
                 overwrite: bool = False, below: float = 0.9) -> StyleAgreement:
    """Compare the audits of two or more runs of the same dataset, case by case.

    Args:
        run_dirs: run directories, each audited by ``hypersort analyze`` for its current weights.
        out_dir: folder for ``style_agreement.csv`` (per case: its row in every run, its agreement)
            and ``style_agreement.json`` (the runs, their weights, the pairwise ARI); ``None``
            writes nothing. Files of these names that ``hypersort compare`` did not write are
            refused unless ``overwrite``.
        below: the JSON lists the cases whose agreement is below this (:meth:`StyleAgreement.unsettled`).

    Raises:
        ValueError: fewer than two distinct runs, a run without a current audit, runs over
            different case ids or different files, or a refused output folder.
    """
    from sklearn.metrics import adjusted_rand_score

    runs = tuple(Path(r) for r in run_dirs)
    if len(runs) < 2:
        raise ValueError(f"compare needs at least two runs; got {len(runs)}.")
    for a, b in combinations(runs, 2):
        if same_file(a, b):
            raise ValueError(f"{a} and {b} are the same run; give runs trained separately (e.g. with other seeds).")
    if out_dir is not None:
        check_output_folder(out_dir, COMPARE_FILES, "hypersort compare", overwrite,
                            written_by_owner=_written_by_compare(Path(out_dir)))
    tables = [read_run_styles(run) for run in runs]
    case_ids = tables[0][0]
    for run, (ids, _, _) in zip(runs[1:], tables[1:]):
        missing, extra = sorted(set(case_ids) - set(ids)), sorted(set(ids) - set(case_ids))
        if missing or extra:
            raise ValueError(f"{run} was audited over other cases than {runs[0]}: missing {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}, extra {extra[:5]}{' ...' if len(extra) > 5 else ''}.")
        _check_same_data(runs[0], run)
    labels, names = [], []
    for ids, run_labels, run_names in tables:
        where = {case: i for i, case in enumerate(ids)}
        order = [where[case] for case in case_ids]
        labels.append(run_labels[order])
        names.append(tuple(run_names[i] for i in order))
    labels = np.stack(labels)
    n_runs = len(runs)
    ari = np.eye(n_runs)
    agreement = np.zeros(len(case_ids))
    for i, j in combinations(range(n_runs), 2):
        ari[i, j] = ari[j, i] = adjusted_rand_score(labels[i], labels[j])
        agreement += company_agreement(labels[i], labels[j])
    agreement /= n_runs * (n_runs - 1) / 2
    result = StyleAgreement(runs, tuple(case_ids), labels, tuple(names), ari, agreement)
    if out_dir is not None:
        _write(result, Path(out_dir), below)
    return result


def _written_by_compare(out: Path) -> bool:
    """Whether ``out`` holds an earlier ``style_agreement.json`` of this command (replaced freely)."""
    try:
        doc = json.loads((out / AGREEMENT_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == _FORMAT


def _write(result: StyleAgreement, out: Path, below: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    header = ["case_id"] + [f"style_run{k + 1}" for k in range(len(result.runs))] + ["agreement"]
    rows = [[case, *(names[i] for names in result.names), f"{result.agreement[i]:.4f}"]
            for i, case in enumerate(result.case_ids)]
    atomic_write_text(out / AGREEMENT_CSV, csv_text(header, rows))
    doc: dict[str, Any] = {
        "format": _FORMAT,
        "runs": [{"run": str(run), "weights_sha256": rundir.weights_digest(run), "epoch": rundir.weights_epoch(run)}
                 for run in result.runs],
        "n_cases": len(result.case_ids),
        "ari": [[round(float(v), 6) for v in row] for row in result.ari],
        "mean_agreement": float(result.agreement.mean()),
        "unsettled_below": below,
        "unsettled_cases": [result.case_ids[i] for i in result.unsettled(below)],
    }
    atomic_write_json(out / AGREEMENT_JSON, doc)
