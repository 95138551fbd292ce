"""Each annotation against one UNet of the map: which way it differs, whether neighbouring parts of
the map hold members that annotate alike, and which of the main mode's members annotate unlike
its usual member.

The audit segments every training case with one UNet of the map; :func:`label_vs_main` turns the
voxel counts of that segmentation and of the case's annotation into one ratio per class.
:func:`annotation_offsets` removes from those ratios what the UNet itself does with organ size:
a network regresses towards the typical organ, drawing small organs a little too large and large
ones a little too small, so a clean case with a large liver looks "annotated larger than the
UNet" by a few percent. What remains is how each annotation differs from the usual one.
:func:`unlike_members` names the members of a group whose annotation of some class differs from
the group's usual member (beyond the volume threshold and :data:`SPREAD` robust standard deviations
of the class); the audit uses it to name the main mode's unusual members (:func:`annotations_alike`)
and to split off a style the map holds inside the main mode, and :func:`annotate_like` to return a
case that annotates like the main mode from another style
(:func:`~HyperSORTLib.analysis.styles.split_by_annotations`). :func:`component_annotation_distance`
compares the members of two parts of the map (the optional merge veto, ``--annotations members``).
``result`` is an :class:`~HyperSORTLib.analysis.audit.AnalysisResult` (any object with
``label_vs_main``, ``clusters.labels``, ``clusters.main_cluster``, ``case_ids`` and ``class_names``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["label_vs_main", "annotation_offsets", "component_annotation_distance", "unlike_members", "annotate_like",
           "annotations_alike", "describe_annotations", "ratio_words", "OFFSET_RANGE", "SPREAD"]

#: Ratios beyond this factor either way count as this factor (an omitted class, a class drawn nowhere).
OFFSET_RANGE = 4.0
#: A member's annotation of a class differs from its group's usual one only beyond this many robust
#: standard deviations of the members' annotations of that class (besides the volume threshold).
SPREAD = 3.0


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


def annotation_offsets(ratios: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """How each annotation differs from the usual one, in log volume, with the UNet's size trend removed.

    ``ratios`` (``[N, C]``, :func:`label_vs_main`) compares each case's annotated volume of a class
    with what one UNet draws on the same scan (``drawn``, ``[N, C]``, voxels). A UNet regresses
    towards the typical organ size, so the log ratio rises with the organ's size even where every
    annotation follows one protocol. That trend is fitted per class across the cases (a Theil-Sen
    line of the log ratio on the log drawn volume; robust to the minority that annotates
    otherwise) and removed: an offset of 0 is an annotation like the usual one for that scan,
    log(1.2) one about 20 % larger. Ratios are clipped to [1/:data:`OFFSET_RANGE`, :data:`OFFSET_RANGE`];
    a class neither has gives 0. A class with fewer than 5 cases to fit keeps its plain log ratio.

    Example:
        >>> drawn = np.array([[50.], [100.], [200.], [400.], [800.], [400.]])
        >>> ratios = (drawn / 200) ** 0.07  # small organs drawn too large, large ones too small ...
        >>> ratios[5] *= 1.25  # ... and one annotated 25 % larger
        >>> np.round(np.exp(annotation_offsets(ratios, drawn)).ravel(), 2).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.25]
    """
    from scipy.stats import theilslopes

    ratios, drawn = np.asarray(ratios, dtype=np.float64), np.asarray(drawn, dtype=np.float64)
    if ratios.shape != drawn.shape or ratios.ndim != 2:
        raise ValueError(f"ratios and drawn must be [cases, classes] of one shape; found {ratios.shape} and "
                         f"{drawn.shape}")
    bound = np.log(OFFSET_RANGE)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.clip(np.log(ratios), -bound, bound)
    logs = np.where(np.isnan(logs), 0.0, logs)
    offsets = logs.copy()
    for k in range(ratios.shape[1]):
        fit = (drawn[:, k] > 0) & (np.abs(logs[:, k]) < bound)
        if fit.sum() < 5 or np.ptp(np.log(drawn[fit, k])) == 0:
            continue
        slope, intercept, *_ = theilslopes(logs[fit, k], np.log(drawn[fit, k]))
        trend = intercept + slope * np.log(np.where(drawn[:, k] > 0, drawn[:, k], np.median(drawn[fit, k])))
        offsets[:, k] = np.clip(logs[:, k] - trend, -bound, bound)
    return offsets


def component_annotation_distance(offsets: np.ndarray, labels: np.ndarray, n_components: int, volume: float,
                                  min_members: int) -> np.ndarray:
    """How differently the members of two parts of the map annotate, in units of ``volume``.

    Each component holding at least ``min_members`` cases is described by its members' median
    :func:`annotation_offsets` per class; two such components are as far apart as their most
    different class (the change in volume over ``volume``, as for decoded UNets). A component with
    fewer members is 0 from every other: a pair's median is one annotation's noise.

    Example:
        >>> offsets = np.log([[1.0], [1.02], [0.99], [1.25], [1.22], [1.3]])
        >>> np.round(component_annotation_distance(offsets, np.array([0, 0, 0, 1, 1, 1]), 2, 0.15, 3), 2).tolist()
        [[0.0, 1.6], [1.6, 0.0]]
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if offsets.ndim != 2 or labels.shape != (offsets.shape[0],):
        raise ValueError(f"need one row of offsets per labelled case; found offsets {offsets.shape} and labels "
                         f"{labels.shape}")
    usual = np.full((n_components, offsets.shape[1]), np.nan)
    for c in range(n_components):
        if np.count_nonzero(labels == c) >= min_members:
            usual[c] = np.median(offsets[labels == c], axis=0)
    known = np.isfinite(usual).all(axis=1)
    distance = np.zeros((n_components, n_components))
    pairs = np.ix_(known, known)
    distance[pairs] = (np.abs(usual[known][:, None] - usual[known][None]).max(axis=-1, initial=0.0)
                       / np.log1p(volume))
    return distance


def unlike_members(ratios: np.ndarray, offsets: np.ndarray | None, members: np.ndarray,
                   volume: float) -> list[tuple[int, int, float]]:
    """The members of a group whose annotation of some class differs from the group's usual member.

    ``ratios`` is :func:`label_vs_main` against one UNet; ``offsets`` (:func:`annotation_offsets`,
    the same with that UNet's size trend removed; the log ratios when ``None``) measure how each
    annotation differs. A member's class differs when it lies beyond ``volume`` (relative, either
    way) from the members' median *and* beyond :data:`SPREAD` robust standard deviations of the
    members' offsets of that class: a small organ at a coarse spacing (a kidney whose one-voxel
    shell is a large share of it) varies more between any two annotations than a liver does. A
    class a member omits or annotates where the UNet draws none always differs; classes the
    members usually omit are not compared.

    Returns:
        ``(case index, class column, ratio to the usual annotation)`` for every member that differs
        (its most different class; ratio 0: omitted, infinite: annotated where the UNet draws
        none), most different first.
    """
    members = np.asarray(members, dtype=np.int64)
    if len(members) == 0:
        return []
    ratios = np.asarray(ratios, dtype=np.float64)
    compared, deviation, cut = _usual(ratios, offsets, members, members, volume)
    unlike = []
    for row, i in enumerate(members):
        omitted, new = ratios[i] == 0, np.isinf(ratios[i])
        beyond = np.where(np.isnan(deviation[row]), 0.0, np.abs(deviation[row]) / cut)
        beyond = np.where(omitted | new, np.inf, beyond)
        beyond = np.where(compared & ~np.isnan(ratios[i]), beyond, 0.0)
        k = int(np.argmax(beyond))
        if beyond[k] > 1.0:
            relative = 0.0 if omitted[k] else (np.inf if new[k] else float(np.exp(deviation[row, k])))
            unlike.append((int(i), k, relative))
    unlike.sort(key=lambda item: -abs(item[2] - 1.0))
    return unlike


def annotate_like(ratios: np.ndarray, offsets: np.ndarray | None, members: np.ndarray,
                  cases: np.ndarray, volume: float) -> np.ndarray:
    """Which of ``cases`` annotate every class like the usual member of the group ``members``: within
    ``volume`` or :data:`SPREAD` robust standard deviations of the class, whichever is wider (as
    :func:`unlike_members` measures it), and omitting exactly the classes the group usually omits."""
    ratios = np.asarray(ratios, dtype=np.float64)
    cases = np.asarray(cases, dtype=np.int64)
    if len(members) == 0 or len(cases) == 0:
        return np.zeros(len(cases), dtype=bool)
    compared, deviation, cut = _usual(ratios, offsets, np.asarray(members, dtype=np.int64), cases, volume)
    has = (ratios[cases] > 0) & np.isfinite(ratios[cases])
    within = np.where(np.isnan(deviation), np.inf, np.abs(deviation)) <= cut
    return np.all(np.where(compared, has & within, ~has), axis=1)


def _usual(ratios: np.ndarray, offsets: np.ndarray | None, members: np.ndarray, cases: np.ndarray,
           volume: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a group: which classes its members usually have, each case's offset from the members' median
    (``[len(cases), C]``) and the cut per class (``volume`` or :data:`SPREAD` robust SDs, the wider)."""
    with warnings.catch_warnings():  # a class no member has: an all-NaN column
        warnings.simplefilter("ignore", RuntimeWarning)
        usual = np.nanmedian(ratios[members], axis=0)
        if offsets is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                offsets = np.log(ratios)
        offsets = np.where(np.isfinite(offsets), np.asarray(offsets, dtype=np.float64), np.nan)
        centre = np.nanmedian(offsets[members], axis=0)
        spread = 1.4826 * np.nanmedian(np.abs(offsets[members] - centre), axis=0)  # robust standard deviation
    compared = np.isfinite(usual) & (usual > 0)
    return compared, offsets[cases] - centre, np.maximum(np.log1p(volume), SPREAD * np.nan_to_num(spread))


def annotations_alike(result: Any, volume: float) -> tuple[int, list[tuple[str, str, float]]]:
    """How many of the main mode's members annotate like its usual member (:func:`unlike_members`).

    Each member's annotation is measured against the main mode's UNet on the member's own scan,
    with that UNet's trend with organ size removed (``annotation_offsets``; ``label_vs_main`` where
    an analysis has no offsets), and against the members' median: what the UNet draws larger or
    smaller on every scan, or on larger organs, cancels, and what remains is how the annotation
    differs from the mode's usual one.

    Returns:
        The number of members alike, and for every other member its case id, its most different
        class and that class's ratio to the usual one (0: omitted, infinite: annotated where the
        UNet draws none; most different first).
    """
    if result.label_vs_main is None:
        return 0, []
    members = np.flatnonzero(result.clusters.labels == result.clusters.main_cluster)
    unlike = unlike_members(result.label_vs_main, getattr(result, "annotation_offsets", None), members, volume)
    return len(members) - len(unlike), [(result.case_ids[i], result.class_names[k + 1], value)
                                        for i, k, value in unlike]


def ratio_words(value: float, than: str = "") -> str:
    """An annotation's ratio to the usual one in words: "about 20% larger", "omitted", ... (``than``: what it
    is compared with, e.g. "the main mode", appended as "... than the main mode's usual member")."""
    if not np.isfinite(value):
        return "annotated where its UNet draws none"
    if value == 0:
        return "omitted"
    return f"about {abs(value - 1):.0%} {'larger' if value > 1 else 'smaller'}" + (
        f" than {than}'s usual member" if than else "")


def describe_annotations(result: Any, volume: float, shown: int = 5) -> str:
    """The main mode's members' own annotations against its UNet, in one sentence."""
    if result.label_vs_main is None:
        return ""
    alike, unlike = annotations_alike(result, volume)
    size = alike + len(unlike)
    text = (f"{alike} of its {size} members annotate every class like its usual member, within {volume:.0%} and "
            f"{SPREAD:g} robust standard deviations of the class (each annotation measured against its UNet on the same "
            f"scan, with the UNet's trend with organ size removed)")
    if unlike:
        named = ", ".join(f"{case} ({name.replace('_', ' ')} {ratio_words(value)})"
                          for case, name, value in unlike[:shown])
        more = f" and {len(unlike) - shown} more" if len(unlike) > shown else ""
        text += f"; the others: {named}{more}"
    return text
