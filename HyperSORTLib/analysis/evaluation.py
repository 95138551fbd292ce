"""The paper's protocol on a clean dataset: perturb, train, audit, and score the audit against the truth.

:func:`evaluate_dataset` (``hypersort evaluate``) takes a dataset whose labels are trusted, a
perturbation plan and a run configuration, and writes into ``OUT``:

``perturbed/``
    the perturbed copy and its ``manifest.csv`` (:func:`HyperSORTLib.perturbation.runner.perturb_dataset`);
``run/``
    the HyperSORT run trained on the copy, with the audit of ``hypersort analyze`` in ``run/analysis/``;
``evaluation.json``
    the scores (below), the inputs and the software versions;
``.hypersort-evaluate.json``
    what the folder was started with (the source, the plan, the configuration): a re-run with the
    same inputs continues where it stopped (the perturbation keeps finished cases, the trainer
    resumes from its last checkpoint), other inputs are refused unless ``overwrite``.

The scores:

* ``ari`` / ``nmi``: the styles found against the plan's groups (the isolated cases counted as one
  group), as in ``hypersort analyze``;
* ``auroc`` / ``average_precision`` / ``precision_at_k``: the suspicion ranking against the
  erroneous cases;
* ``main_mode``: the UNet decoded from the main mode segments every case, and is scored against
  the source's labels (the clean ones): Dice and HD95 (95th percentile Hausdorff distance in mm,
  MONAI's ``compute_hausdorff_distance`` with the voxel spacing) per class, averaged over cases;
  plus the share of the main mode's cases that the plan left clean;
* ``styles``: one check per systematic group of the plan (:func:`check_styles`): does the UNet
  decoded from the row (style or isolated group) holding most of the group's cases reproduce the
  injected bias? A dilated or eroded class's volume ratio to the main mode within ``tolerance``
  (10 %) of the injected ratio (from the manifest's ``volume_change_<class>``), an omitted class
  missing, swapped classes swapped, a merged class labelled as its target; the clean group held by
  the main mode.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from HyperSORTLib.analysis.behaviour import ClassBehaviour, ClusterBehaviour
from HyperSORTLib.data.manifest import Manifest
from HyperSORTLib.utils.io import atomic_write_json, check_output_folder

__all__ = ["EVALUATION_FILE", "EVALUATION_FORMAT", "PERTURBED_DIR", "RUN_DIR", "STATE_FILE", "TOLERANCE",
           "EvaluationResult", "StyleCheck", "check_evaluation_output", "check_styles", "clear_evaluation_output", "evaluate_dataset",
           "hd95_per_class", "main_mode_scores", "style_checks", "with_clean_labels"]

#: What :func:`evaluate_dataset` writes in its output folder.
PERTURBED_DIR, RUN_DIR, EVALUATION_FILE, STATE_FILE = "perturbed", "run", "evaluation.json", ".hypersort-evaluate.json"
EVALUATION_FORMAT = "hypersort-evaluation"
#: Largest relative difference between the volume ratio a style's UNet shows and the injected one.
TOLERANCE = 0.10

#: The perturbations whose bias :func:`check_styles` can verify, and the class parameters that say
#: which classes they touch.
CHECKED_PERTURBATIONS = {"dilate_class": ("class_id",), "erode_class": ("class_id",), "omit_class": ("class_id",),
                         "swap_classes": ("a", "b"), "merge_classes": ("source", "target")}


# --------------------------------------------------------------------------- clean labels
def with_clean_labels(cases: Any, clean: Any) -> Any:
    """The cases of ``cases``, in its order, annotated with their clean labels.

    Args:
        cases: a :class:`~HyperSORTLib.data.CaseList` (e.g. a perturbed copy, or a run's cases).
        clean: the clean annotations: a ``CaseList`` holding every case id of ``cases`` (e.g. the
            source a perturbed copy was made from; its cases are taken as they are, images
            included), or a folder holding a label file of the same name for every case (the
            demo cohort's ``labelsClean/``).

    Raises:
        ValueError: ``clean`` lacks some of the cases, or has other classes.
        FileNotFoundError: a clean label file is missing (the message names it).
    """
    from HyperSORTLib.data import CaseList, CaseRecord

    if isinstance(clean, CaseList):
        by_id = {c.case_id: c for c in clean.cases}
        absent = [c for c in cases.case_ids if c not in by_id]
        if absent:
            shown = ", ".join(absent[:5]) + (f", ... ({len(absent)} in all)" if len(absent) > 5 else "")
            raise ValueError(f"The clean dataset {clean.root} lacks {len(absent)} of the {len(cases.cases)} "
                             f"case(s) to score: {shown}.")
        if tuple(clean.class_names) != tuple(cases.class_names):
            raise ValueError(f"The clean dataset {clean.root} has the classes {', '.join(clean.class_names)}; "
                             f"the cases to score have {', '.join(cases.class_names)}.")
        return dataclasses.replace(clean, cases=tuple(by_id[c] for c in cases.case_ids))
    folder = Path(clean)
    records = []
    for case in cases.cases:
        if case.label is None:
            raise ValueError(f"Case '{case.case_id}' is annotated by masks; give its clean annotations as a "
                             f"case list, not as the folder {folder}.")
        path = folder / case.label.name
        if not path.is_file():
            raise FileNotFoundError(f"Case '{case.case_id}': its clean label {path} does not exist.")
        records.append(CaseRecord(case.case_id, case.image, path))
    return dataclasses.replace(cases, cases=tuple(records), source=None)


# --------------------------------------------------------------------------- HD95 and main-mode scores
def hd95_per_class(truth: np.ndarray, pred: np.ndarray, class_ids: Iterable[int],
                   spacing: Sequence[float]) -> dict[int, float]:
    """95th-percentile Hausdorff distance (mm) of each class between two label maps.

    MONAI's ``compute_hausdorff_distance(..., percentile=95, spacing=spacing)`` (symmetric,
    Euclidean, between the masks' edge voxels). A class absent from both maps scores 0.0 (nothing
    to disagree about, as a Dice of 1.0); a class present in only one of them scores ``inf`` (no
    surface to measure to).

    Args:
        truth, pred: integer label maps of one shape.
        class_ids: the classes to score.
        spacing: voxel size in mm along each axis of the maps.

    Raises:
        ValueError: the maps differ in shape, are not integer arrays, or ``spacing`` has the wrong length.
    """
    import torch
    from monai.metrics import compute_hausdorff_distance

    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction differ in shape: {truth.shape} and {pred.shape}.")
    if truth.dtype.kind not in "iub" or pred.dtype.kind not in "iub":
        raise ValueError(f"label maps must be integer arrays; found {truth.dtype} and {pred.dtype}.")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != truth.ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {truth.ndim} positive numbers (mm), one per axis; found {spacing}.")
    out: dict[int, float] = {}
    for k in class_ids:
        t, p = truth == k, pred == k
        if not t.any() and not p.any():
            out[int(k)] = 0.0
        elif not t.any() or not p.any():
            out[int(k)] = math.inf
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = compute_hausdorff_distance(torch.from_numpy(p[None, None]), torch.from_numpy(t[None, None]),
                                                   include_background=True, percentile=95, spacing=spacing)
            out[int(k)] = float(value.reshape(-1)[0])
    return out


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def main_mode_scores(run: Any, clean_cases: Any, centre: np.ndarray, cache: Any = None,
                     progress: bool = False) -> dict[str, Any]:
    """Dice and HD95 against the clean labels of the UNet decoded from ``centre``, over all cases.

    Every case is preprocessed as training did (its analysis patch, see
    :func:`~HyperSORTLib.analysis.inputs.training_patches`), so prediction and clean label share
    one grid whatever the configuration resamples to; HD95 uses that grid's spacing.

    Args:
        run: a :class:`~HyperSORTLib.inference.TrainedRun`.
        clean_cases: the run's cases with their clean labels (:func:`with_clean_labels`).
        centre: the latent point (the main mode's centre).
        cache: a preprocessing cache to read (never written), or ``None``.
        progress: show a progress bar.

    Returns:
        ``{"dice", "dice_per_class", "hd95_mm", "hd95_per_class", "hd95_undefined", "n_cases"}``:
        means over the classes of the per-class means over cases. HD95 is averaged over the cases
        where it is finite; ``hd95_undefined`` counts, per class, the cases where the class is in
        only one of the two maps (left out of the mean).
    """
    import torch

    from HyperSORTLib.analysis.inputs import training_patches
    from HyperSORTLib.metrics import dice_per_class

    names = tuple(run.class_names)
    classes = range(1, len(names))
    dice: dict[str, list[float]] = {names[k]: [] for k in classes}
    hd95: dict[str, list[float]] = {names[k]: [] for k in classes}
    undefined = {names[k]: 0 for k in classes}
    unet = run.decode(np.asarray(centre, dtype=np.float32))
    n_cases = 0
    with torch.no_grad():
        for patch in training_patches(clean_cases, run.config.data, cache, progress):
            image = torch.from_numpy(np.ascontiguousarray(patch.image))[None, None]
            pred = run.predict_logits(image, unet).argmax(1)[0].cpu().numpy().astype(np.int64)
            truth = np.asarray(patch.label).astype(np.int64)
            for k, value in dice_per_class(truth, pred, classes).items():
                dice[names[k]].append(value)
            for k, value in hd95_per_class(truth, pred, classes, patch.spacing).items():
                if math.isfinite(value):
                    hd95[names[k]].append(value)
                else:
                    undefined[names[k]] += 1
            n_cases += 1
    dice_means = {n: _mean(v) for n, v in dice.items()}
    hd_means = {n: _mean(v) for n, v in hd95.items()}
    finite_hd = [v for v in hd_means.values() if v is not None]
    return {"dice": _mean([v for v in dice_means.values() if v is not None]), "dice_per_class": dice_means,
            "hd95_mm": _mean(finite_hd), "hd95_per_class": hd_means, "hd95_undefined": undefined,
            "n_cases": n_cases}


# --------------------------------------------------------------------------- per-style faithfulness
@dataclass(frozen=True)
class StyleCheck:
    """Whether the row holding most of a plan group's cases segments with the group's injected bias.

    Attributes:
        group: the plan group (manifest ``group``).
        perturbation: its perturbation, with the classes it touches (``dilate_class liver``).
        n_cases: the group's cases.
        row: the style (or isolated group) holding most of them; ``None`` when nothing was checked.
        row_name: how the report names that row (``style 1``, ``isolated 4``).
        row_cases: how many of the group's cases it holds.
        check: what was checked (``liver volume ratio``, ``spleen missing``, ...).
        expected: the injected bias in words or numbers (``x1.25``).
        found: what the row's UNet does, against the main mode's UNet on the probe cases.
        passed: ``True``/``False``; ``None`` when the group's bias cannot be checked (``detail`` says why).
        detail: why it failed or was not checked, empty when it passed.
        injected_ratio / found_ratio: the volume ratios of a volume check (``None`` otherwise).
    """

    group: str
    perturbation: str
    n_cases: int
    row: int | None
    row_name: str
    row_cases: int
    check: str
    expected: str
    found: str
    passed: bool | None
    detail: str = ""
    injected_ratio: float | None = None
    found_ratio: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _params_steps(name: str, params: Any) -> list[tuple[str, dict]]:
    """``(perturbation, params)`` of every step of a manifest row."""
    names = [n for n in name.split("+") if n]
    if len(names) == 1:
        return [(names[0], params if isinstance(params, dict) else {})]
    values = params if isinstance(params, list) else [{}] * len(names)
    return [(n, p if isinstance(p, dict) else {}) for n, p in zip(names, values)]


def _signature(row: Mapping[str, str]) -> tuple[tuple[str, tuple], ...]:
    """A case's perturbations and the classes they touch (not the drawn amounts)."""
    name = (row.get("perturbation") or "none").strip() or "none"
    if name == "none":
        return ()
    try:
        params = json.loads(row.get("params") or "{}")
    except json.JSONDecodeError:
        params = {}
    steps = []
    for step, values in _params_steps(name, params):
        keys = CHECKED_PERTURBATIONS.get(step, ("class_id", "neighbour_id", "a", "b", "source", "target"))
        steps.append((step, tuple((k, str(values[k])) for k in keys if k in values)))
    return tuple(steps)


def _describe_steps(signature: Sequence[tuple[str, tuple]]) -> str:
    if not signature:
        return "none"
    return " + ".join(" ".join([name, *(v for _, v in classes)]) for name, classes in signature)


def _class_of(behaviour: ClusterBehaviour, name: str) -> ClassBehaviour | None:
    return next((c for c in behaviour.classes if c.name == name), None)


def _injected_change(manifest: Manifest, members: np.ndarray, class_name: str) -> float | None:
    column = f"volume_change_{class_name}"
    values = []
    for i in members:
        try:
            value = float(manifest.rows[i].get(column, "nan") or "nan")
        except ValueError:
            continue
        if math.isfinite(value):
            values.append(value)
    return float(np.mean(values)) if values else None


def check_styles(manifest: Manifest, rows: np.ndarray, row_names: Sequence[str], main_row: int,
                 behaviours: Mapping[int, ClusterBehaviour], tolerance: float = TOLERANCE) -> list[StyleCheck]:
    """One check per systematic group of a manifest: does its row's UNet reproduce the group's bias?

    For every group that is not marked erroneous, the row (style or isolated group) holding most
    of its cases is compared with the group's perturbation, read from the manifest's
    ``perturbation`` and ``params`` columns:

    * ``none`` (the clean group): the row is the main mode;
    * ``dilate_class`` / ``erode_class``: the class's volume ratio, the row's UNet over the main
      mode's (``behaviours[row]``), lies within ``tolerance`` of the injected ratio ``1 +`` the
      group's mean ``volume_change_<class>``: ``|found / injected - 1| <= tolerance``;
    * ``omit_class``: the class is missing; ``swap_classes``: the two classes are swapped;
      ``merge_classes``: the source class is labelled as the target.

    A group whose cases mostly sit in the main mode fails every bias check (its bias was not
    separated from the consensus). A group whose cases carry different perturbations, or a
    perturbation without a rule here (``shift_class``, ...), gets one check with ``passed=None``.

    Args:
        manifest: the truth, aligned with ``rows``.
        rows: the row of every case.
        row_names: the name of every row, by row index.
        main_row: the main mode's row.
        behaviours: every row's behaviour against the main mode's on the probe cases.
        tolerance: largest relative difference of the volume ratios.

    Raises:
        ValueError: ``rows`` and the manifest differ in length, a row has no behaviour, or the
            tolerance is not in (0, 1).
    """
    rows = np.asarray(rows)
    if len(rows) != len(manifest.groups):
        raise ValueError(f"{len(rows)} row labels for the {len(manifest.groups)} cases of the manifest {manifest.path}.")
    if not 0.0 < float(tolerance) < 1.0:
        raise ValueError(f"tolerance must lie in (0, 1); found {tolerance!r}.")
    missing = sorted(set(int(r) for r in rows) - set(behaviours))
    if missing:
        raise ValueError(f"rows {missing} have no behaviour against the main mode.")
    groups = np.asarray(manifest.groups)
    checks: list[StyleCheck] = []
    for group in dict.fromkeys(manifest.groups):  # groups in manifest order
        members = np.flatnonzero(groups == group)
        if manifest.erroneous[members].any():
            continue  # individual errors are not a style; the detection scores cover them
        counts = np.bincount(rows[members].astype(np.int64))
        row = int(np.argmax(counts))  # ties: the lower (larger) row
        held = int(counts[row])
        base = dict(group=group, n_cases=len(members), row=row, row_name=row_names[row], row_cases=held)
        signatures = {_signature(manifest.rows[i]) for i in members}
        if len(signatures) > 1:
            checks.append(StyleCheck(perturbation="mixed", check="bias reproduced", expected="one perturbation",
                                     found=f"{len(signatures)} different ones", passed=None,
                                     detail="the group's cases carry different perturbations", **base))
            continue
        signature = next(iter(signatures))
        described = _describe_steps(signature)
        if not signature:
            checks.append(StyleCheck(perturbation="none", check="held by the main mode", expected=row_names[main_row],
                                     found=row_names[row], passed=row == main_row,
                                     detail="" if row == main_row else "the clean cases are mostly outside the main mode",
                                     **base))
            continue
        for step, classes in signature:
            checks.append(_check_step(step, dict(classes), manifest, members, row, main_row, behaviours[row],
                                      tolerance, described, base))
    return checks


def _check_step(step: str, classes: dict[str, str], manifest: Manifest, members: np.ndarray, row: int, main_row: int,
                behaviour: ClusterBehaviour, tolerance: float, described: str, base: dict) -> StyleCheck:
    in_main = row == main_row
    not_separated = "its cases are mostly in the main mode: the bias was not separated from the consensus"

    def result(check: str, expected: str, found: str, ok: bool, why: str, **extra: Any) -> StyleCheck:
        passed = ok and not in_main
        detail = "" if passed else (not_separated if in_main else why)
        return StyleCheck(perturbation=described, check=check, expected=expected, found=found, passed=passed,
                          detail=detail, **base, **extra)

    if step not in CHECKED_PERTURBATIONS:
        return StyleCheck(perturbation=described, check="bias reproduced", expected=step, found="", passed=None,
                          detail=f"no rule checks {step}", **base)
    if step in ("dilate_class", "erode_class", "omit_class"):
        name = classes.get("class_id", "")
        found_class = _class_of(behaviour, name)
        if found_class is None:
            return StyleCheck(perturbation=described, check=f"{name} bias", expected="", found="", passed=None,
                              detail=f"the run has no class {name!r}", **base)
        if step == "omit_class":
            state = "missing" if found_class.missing else (
                f"present ({_ratio_text(1 + found_class.volume_change)} of the main mode's volume)"
                if math.isfinite(found_class.volume_change) else "present")
            return result(f"{name} missing", "missing", state, found_class.missing, f"{name} is not missing")
        injected = _injected_change(manifest, members, name)
        if injected is None:
            return StyleCheck(perturbation=described, check=f"{name} volume ratio", expected="", found="",
                              passed=None, detail=f"the manifest {manifest.path} records no volume_change_{name}",
                              **base)
        expected_ratio = 1.0 + injected
        if not math.isfinite(found_class.volume_change):
            return result(f"{name} volume ratio", _ratio_text(expected_ratio), "undefined", False,
                          f"the main mode's UNet gives no {name} on the probe cases",
                          injected_ratio=expected_ratio)
        found_ratio = 1.0 + found_class.volume_change
        error = abs(found_ratio / expected_ratio - 1.0) if expected_ratio > 0 else math.inf
        return result(f"{name} volume ratio", _ratio_text(expected_ratio), _ratio_text(found_ratio),
                      error <= tolerance, f"{error:.0%} off the injected ratio (tolerance {tolerance:.0%})",
                      injected_ratio=expected_ratio, found_ratio=found_ratio)
    if step == "swap_classes":
        a, b = classes.get("a", ""), classes.get("b", "")
        found_a = _class_of(behaviour, a)
        swapped = found_a is not None and found_a.swapped_with == b
        found = "swapped" if swapped else ("not swapped" if found_a is None or found_a.swapped_with is None
                                           else f"swapped with {found_a.swapped_with}")
        return result(f"{a} and {b} swapped", "swapped", found, swapped, f"{a} and {b} are not swapped")
    source, target = classes.get("source", ""), classes.get("target", "")
    found_source = _class_of(behaviour, source)
    merged = found_source is not None and found_source.labelled_as == target
    found = f"labelled as {found_source.labelled_as}" if found_source is not None and found_source.labelled_as else (
        "kept")
    return result(f"{source} labelled as {target}", f"labelled as {target}", found, merged,
                  f"{source} is not labelled as {target}")


def _ratio_text(ratio: float) -> str:
    return f"x{ratio:.2f}"


def style_checks(result: Any, tolerance: float = TOLERANCE) -> list[StyleCheck]:
    """:func:`check_styles` on an :class:`~HyperSORTLib.analysis.audit.AnalysisResult` with a manifest."""
    from HyperSORTLib.analysis.styles import row_name

    if result.manifest is None:
        raise ValueError("The analysis has no manifest; style checks need the perturbation of every case.")
    styles = result.clusters
    names = [row_name(styles, r) for r in range(styles.n_clusters)]
    return check_styles(result.manifest, styles.labels, names, styles.main_cluster, result.behaviours, tolerance)


# --------------------------------------------------------------------------- output folder
def _read_state(out: Path) -> dict | None:
    try:
        state = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("format") == EVALUATION_FORMAT else None


_NAMES = (PERTURBED_DIR, RUN_DIR, EVALUATION_FILE, STATE_FILE)


def check_evaluation_output(out: str | Path, inputs: Mapping[str, Any], overwrite: bool = False) -> bool:
    """Check that ``out`` may receive an evaluation of ``inputs``; returns whether it holds one to resume.

    A new or empty folder, or a folder without entries of the evaluation's names, starts afresh.
    A folder holding an evaluation of the same inputs is resumed (with or without ``overwrite``).
    Entries of the evaluation's names that another command wrote, or an evaluation of other
    inputs, are refused unless ``overwrite`` (then :func:`clear_evaluation_output` removes them).
    Nothing is written or removed here.

    Raises:
        ValueError: one line naming the folder, what is there and ``--overwrite``.
    """
    out = Path(out)
    state = _read_state(out) if out.is_dir() else None
    wanted = json.loads(json.dumps(inputs))
    if state is not None and state.get("inputs") == wanted:
        return True
    if state is not None and not overwrite:
        recorded = state.get("inputs") or {}
        differ = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
        raise ValueError(f"--out {out} holds an evaluation of other inputs ({', '.join(differ)} differ); choose "
                         f"another folder or pass --overwrite to start it afresh.")
    check_output_folder(out, _NAMES, "hypersort evaluate", overwrite)
    return False


def clear_evaluation_output(out: str | Path) -> list[str]:
    """Remove the entries of the evaluation's names from ``out`` (other files stay); returns their names."""
    out = Path(out)
    removed = []
    for name in _NAMES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


# --------------------------------------------------------------------------- the protocol
@dataclass
class EvaluationResult:
    """What :func:`evaluate_dataset` computed and wrote.

    Attributes:
        out_dir: the output folder.
        metrics: the content of ``evaluation.json``.
        checks: the per-style checks.
        analysis: the audit of the trained run.
    """

    out_dir: Path
    metrics: dict[str, Any]
    checks: list[StyleCheck] = field(default_factory=list)
    analysis: Any = None

    @property
    def path(self) -> Path:
        return self.out_dir / EVALUATION_FILE

    def table(self) -> str:
        """The scores and checks as one text table (``score | expected | found | result``)."""
        m = self.metrics
        main = m["main_mode"]
        rows: list[tuple[str, str, str, str]] = [
            ("styles vs groups: ARI", "", _num(m["ari"]), ""),
            ("styles vs groups: NMI", "", _num(m["nmi"]), ""),
            ("erroneous cases: AUROC", "", _num(m["auroc"]), ""),
            ("erroneous cases: average precision", "", _num(m["average_precision"]), ""),
            (f"erroneous cases: precision@{m['k'] if m['k'] is not None else 'k'}", "", _num(m["precision_at_k"]), ""),
            (f"main mode ({main['row_name']}, {main['size']} cases): clean share", "", _num(main["clean_share"]), ""),
            ("main mode vs clean labels: Dice", "", _num(main["dice"]), ""),
            ("main mode vs clean labels: HD95 (mm)", "", _num(main["hd95_mm"], 2), ""),
        ]
        for c in self.checks:
            label = f"{c.group} ({c.perturbation}) -> {c.row_name} [{c.row_cases}/{c.n_cases}]: {c.check}"
            outcome = "not checked" if c.passed is None else ("pass" if c.passed else "FAIL")
            rows.append((label, c.expected, c.found, outcome))
        header = ("score", "expected", "found", "result")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        notes = [f"  {c.group}: {c.detail}" for c in self.checks if c.detail]
        return "\n".join(lines + (["notes:", *notes] if notes else []))

    def summary(self) -> str:
        m = self.metrics
        checked = [c for c in self.checks if c.passed is not None]
        head = (f"HyperSORT evaluation: {m['n_cases']} cases of {m['dataset']}, plan {m['plan']}, {m['epochs']} epochs "
                f"on {m['device']} in {m['wall_time_s']:.0f} s")
        tail = (f"{sum(c.passed for c in checked)} of {len(checked)} style checks passed; "
                f"{m['n_styles']} style(s) found. Results: {self.path}; audit: {m['report']}")
        return "\n".join([head, self.table(), tail])


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def evaluate_dataset(case_list: Any, plan: Any, out_dir: str | Path, config: Any = None, *,
                     train_overrides: Mapping[str, Any] | None = None, plan_text: str | None = None,
                     cache: Any = None, workers: int = 1, device: str | None = None,
                     tolerance: float = TOLERANCE, overwrite: bool = False, allow_empty_labels: bool = False,
                     progress: bool = False, callbacks: Sequence[Any] = ()) -> EvaluationResult:
    """Perturb a clean dataset, train HyperSORT on the copy, audit it, and score the audit.

    Args:
        case_list: the clean dataset (:func:`HyperSORTLib.data.read_dataset`); its labels are the truth.
        plan: a :class:`~HyperSORTLib.perturbation.plan.PerturbationPlan`, a plan file or a built-in plan name.
        out_dir: the output folder (module docstring).
        config: the :class:`~HyperSORTLib.config.RunConfig` (default: the reference configuration),
            fitted to the dataset's classes here.
        train_overrides: ``train`` settings replacing the configuration's (``epochs``, ``seed``, ...).
        plan_text: the plan file's text, kept as ``perturbed/perturb_plan.yaml``.
        cache: a :class:`~HyperSORTLib.data.cache.PreprocessCache` for preprocessing, or ``None``.
        workers: processes perturbing cases in parallel.
        device: where the audit and the scoring run (default: where training ran).
        tolerance: of the volume-ratio checks (:func:`check_styles`).
        overwrite: replace files of the evaluation's names in ``out_dir`` that are not an
            evaluation of these inputs.
        allow_empty_labels: an empty source label is not a problem.
        progress: show progress bars.
        callbacks: extra training callbacks.

    Returns:
        An :class:`EvaluationResult`; ``evaluation.json`` is written atomically, last.

    Raises:
        ValueError: broken source cases, a plan that does not fit the dataset, an output folder
            holding other files (see :func:`check_evaluation_output`).
    """
    from HyperSORTLib.analysis.audit import analyze_run
    from HyperSORTLib.analysis.styles import row_name
    from HyperSORTLib.config import RunConfig, config_hash_fields
    from HyperSORTLib.data import PreprocessedCases, case_list_from_source
    from HyperSORTLib.data.validation import check_cases
    from HyperSORTLib.inference import TrainedRun
    from HyperSORTLib.perturbation.plan import PerturbationPlan, builtin_plan_path, load_plan
    from HyperSORTLib.perturbation.runner import perturb_dataset
    from HyperSORTLib.training import Trainer
    from HyperSORTLib.utils.versions import software_versions

    start = time.perf_counter()
    out = Path(out_dir)
    plan_name = str(getattr(plan, "source", "<plan>")) if isinstance(plan, PerturbationPlan) else str(plan)
    if not isinstance(plan, PerturbationPlan):
        plan_file = Path(plan) if Path(plan).is_file() else builtin_plan_path(str(plan))
        loaded = load_plan(plan)
        if plan_text is None and plan_file.is_file():
            plan_text = plan_file.read_text(encoding="utf-8")
        plan = loaded
    plan.check_classes(case_list.class_names)
    plan.assign(case_list.case_ids)  # the plan fits the dataset before anything is written
    config = (config or RunConfig()).for_dataset(case_list, **dict(train_overrides or {}))
    inputs = {"source": {**dict(case_list.source or {}), "root": str(Path(case_list.root).resolve()),
                         "cases": list(case_list.case_ids)},
              "plan": plan.to_dict(), "config": config_hash_fields(config)}
    resumed = check_evaluation_output(out, inputs, overwrite)  # before any work: nothing is written yet
    report = check_cases(case_list, cache=cache, progress=progress, allow_empty=allow_empty_labels)
    if not report.ok:
        bad = list(report.bad_case_ids)
        first = (report.dataset_problems or report.problems)[0]
        raise ValueError(f"The dataset {case_list.root} has {len(bad) or 'a'} broken case(s)"
                         f"{': ' + ', '.join(bad[:5]) if bad else ''} (first: {first.case_id}: {first.detail}); "
                         f"run 'hypersort check-data --data {case_list.root}' and fix them first.")
    if overwrite and not resumed:
        clear_evaluation_output(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / STATE_FILE, {"format": EVALUATION_FORMAT, "inputs": json.loads(json.dumps(inputs))})

    perturbed = perturb_dataset(case_list, out / PERTURBED_DIR, plan, workers=workers, progress=progress,
                                plan_text=plan_text)
    source = dict(case_list.source or {})
    copy_path = out / PERTURBED_DIR
    if case_list.layout == "csv" and source.get("path"):
        copy_path = copy_path / Path(source["path"]).name
    cases = case_list_from_source({**source, "path": str(copy_path), "format": source.get("format") or case_list.layout})
    if cases.case_ids != case_list.case_ids:
        raise ValueError(f"The perturbed copy {copy_path} lists other cases than the source {case_list.root}.")

    dataset = PreprocessedCases(cases, config.data, cache=cache, progress=progress,
                                workers=config.train.num_workers)
    trainer = Trainer(config, dataset, cases.case_ids, out / RUN_DIR, callbacks=callbacks, progress=progress,
                      data_source=cases.source)
    trained = trainer.fit()
    device = device or str(trainer.device)

    audit = analyze_run(out / RUN_DIR, manifest=perturbed.manifest, device=device, seed=config.train.seed,
                        cache_dir=None if cache is None else cache.root, use_cache=cache is not None,
                        progress=progress)
    run = TrainedRun.load(out / RUN_DIR, device=device)
    clean = with_clean_labels(cases, case_list)
    styles = audit.clusters
    main = styles.main_cluster
    scores = main_mode_scores(run, clean, styles.centers[main], cache, progress)
    checks = style_checks(audit, tolerance)

    truth = audit.manifest
    clean_groups = _clean_groups(truth)
    in_main = styles.labels == main
    m = audit.metrics
    metrics = {
        "format": EVALUATION_FORMAT,
        "dataset": str(case_list.root), "plan": plan_name, "n_cases": len(cases.case_ids),
        "group_sizes": truth.group_sizes(), "n_erroneous": int(truth.erroneous.sum()),
        "ari": m.get("ari"), "nmi": m.get("nmi"),
        "auroc": m.get("auroc"), "average_precision": m.get("average_precision"),
        "precision_at_k": m.get("precision_at_k"), "k": m.get("k"),
        "n_styles": int(styles.n_styles), "n_clusters": int(styles.n_clusters),
        "main_mode": {"row": int(main), "row_name": row_name(styles, main), "size": int(in_main.sum()),
                      "consensus": bool(styles.consensus),
                      "clean_share": float(np.mean([g in clean_groups for g in np.asarray(truth.groups)[in_main]]))
                      if in_main.any() else None,
                      **scores},
        "styles": [c.as_dict() for c in checks],
        "styles_checked": sum(c.passed is not None for c in checks),
        "styles_passed": sum(c.passed is True for c in checks),
        "tolerance": float(tolerance),
        "epochs": trained.epochs, "resumed_from": trained.resumed_from, "resumed_folder": resumed,
        "perturbed_cases_reused": perturbed.reused,
        "device": device, "seed": config.train.seed,
        "paths": {"perturbed": str(perturbed.dst), "manifest": str(perturbed.manifest), "run": str(out / RUN_DIR),
                  "analysis": str(audit.out_dir)},
        "report": str(audit.report_path),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "software": software_versions(), "config": config.to_dict(),
    }
    metrics = _json_safe(metrics)
    atomic_write_json(out / EVALUATION_FILE, metrics)
    return EvaluationResult(out, metrics, checks, audit)


def _clean_groups(manifest: Manifest) -> set[str]:
    """The groups whose every case is unperturbed and not erroneous."""
    groups: dict[str, bool] = {}
    for group, row, erroneous in zip(manifest.groups, manifest.rows, manifest.erroneous):
        clean = (row.get("perturbation") or "none").strip() in ("", "none") and not erroneous
        groups[group] = groups.get(group, True) and clean
    return {g for g, clean in groups.items() if clean}


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value
