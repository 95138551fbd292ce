"""Each annotation against the main mode's UNet: which way it differs, and which of the main mode's
members annotate unlike its usual member.

The audit segments every training case with the main mode's UNet (for ``main_mode_loss``);
:func:`label_vs_main` turns the voxel counts of that segmentation and of the case's annotation
into one ratio per class, and :func:`annotations_alike` compares the main mode's members with
each other. ``result`` is an :class:`~HyperSORTLib.analysis.audit.AnalysisResult` (any object
with ``label_vs_main``, ``clusters.labels``, ``clusters.main_cluster``, ``case_ids`` and
``class_names``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["label_vs_main", "annotations_alike", "describe_annotations"]


def label_vs_main(labelled: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """Each annotation's volume of a class over the volume the main mode's UNet draws on the same
    scan: 1.0 when they agree, 1.2 for an annotation 20% larger, 0 for a class the annotation
    omits; infinite when the UNet draws none of a class the annotation has, NaN when neither has it.

    Example:
        >>> label_vs_main(np.array([[120, 0, 0]]), np.array([[100, 50, 0]])).tolist()
        [[1.2, 0.0, nan]]
    """
    labelled, drawn = np.asarray(labelled, dtype=np.float64), np.asarray(drawn, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return labelled / drawn


def annotations_alike(result: Any, volume: float) -> tuple[int, list[tuple[str, str, float]]]:
    """How many of the main mode's members annotate like its usual member.

    Each member's annotation is measured against the main mode's UNet on the member's own scan
    (``label_vs_main``), and that ratio against the members' median ratio of the class: what the
    UNet draws larger or smaller on every scan (a small organ at a coarse spacing) cancels, and
    what remains is how the annotation differs from the mode's usual one. A member is alike when
    every class lies within ``volume`` (relative, either way). Classes the mode's members usually
    omit are not compared.

    Returns:
        The number of members alike, and for every other member its case id, its most different
        class and that class's ratio to the usual one (most different first).
    """
    if result.label_vs_main is None:
        return 0, []
    members = np.flatnonzero(result.clusters.labels == result.clusters.main_cluster)
    if len(members) == 0:
        return 0, []
    with warnings.catch_warnings():  # a class no member has: an all-NaN column
        warnings.simplefilter("ignore", RuntimeWarning)
        usual = np.nanmedian(result.label_vs_main[members], axis=0)
    usual = np.where(np.isfinite(usual) & (usual > 0), usual, np.nan)
    alike, unlike = 0, []
    for i in members:
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = result.label_vs_main[i] / usual
        change = np.where(np.isnan(ratios), 0.0, np.abs(ratios - 1.0))  # an omitted class: 1, a new one: inf
        worst = int(np.argmax(change))
        if change[worst] <= volume:
            alike += 1
        else:
            unlike.append((result.case_ids[i], result.class_names[worst + 1], float(ratios[worst])))
    unlike.sort(key=lambda item: -abs(item[2] - 1.0))
    return alike, unlike


def describe_annotations(result: Any, volume: float, shown: int = 5) -> str:
    """The main mode's members' own annotations against its UNet, in one sentence."""
    if result.label_vs_main is None:
        return ""
    alike, unlike = annotations_alike(result, volume)
    size = alike + len(unlike)
    text = (f"{alike} of its {size} members annotate every class like its usual member, within {volume:.0%} (each "
            f"annotation measured against its UNet on the same scan)")
    if unlike:
        def ratio(value: float) -> str:
            if not np.isfinite(value):
                return "annotated where its UNet draws none"
            if value == 0:
                return "omitted"
            return f"{abs(value - 1):.0%} {'larger' if value > 1 else 'smaller'}"
        named = ", ".join(f"{case} ({name.replace('_', ' ')} {ratio(value)})" for case, name, value in unlike[:shown])
        more = f" and {len(unlike) - shown} more" if len(unlike) > shown else ""
        text += f"; the others: {named}{more}"
    return text
