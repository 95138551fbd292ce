"""Annotation styles: regions of the latent map whose decoded UNets segment alike.

A mixture fitted to the latent table is only a fine partition: it splits an elongated style into
several components and can place a small group next to a large one. HyperSORT can check what
a region *does*: the UNet decoded from a component's centre segments the probe cases, and two
components belong to one style when their UNets segment those cases alike.

:func:`find_styles` merges neighbouring mixture components while the merged group segments alike
(:class:`StyleThresholds`: each class's volume within ``volume`` of the other's, Dice between them
at least ``dice``, no class missing, appearing, swapped or relabelled), by default on average over
the pairs of components weighted by the cases they hold, with no pair differing in kind
(``StyleThresholds.linkage``; ``"complete"`` asks it of every pair). A class that both UNets draw
at under half its usual volume across the map is compared against that usual volume (``StyleThresholds.volume_scale``): a style
that omits a class can decode to UNets that keep remnants of it of different sizes (demo seed 2:
a spleen 69 % and 77 % smaller than the main mode's), and two remnants differ by a few percent of
a spleen, not by a third of the smaller remnant. It never merges across a behavioural difference. Behaviour
decides *whether* two groups may merge; the map decides *in which order*: of the groups that
may merge, the two whose component centres lie nearest each other merge first. The order
matters for a component that segments like two styles that differ from each other (on the
demo: clean cases with large livers, whose UNets draw the liver larger, about as much as the
dilated style draws it larger still): it joins whichever it merges with first, and the map
places it beside the style it belongs to. Components too small to be a style (fewer than
``min_style_size`` cases: a pair at the edge of a style, whose centre sits where few cases are)
wait until the style-sized ones are merged; then each joins the style of its nearest neighbour
if it segments like that neighbour (``StyleThresholds.small_components``). Merged in the order
of the map they could take a style-sized component first and keep it from the rest of its style
(demo seed 1: the clean cases split 12 + 10 through a 2-case component). Groups
holding fewer than ``min_style_size`` cases are not styles: they are reported as isolated
cases, candidate errors. Average linkage can let a style drift into the main mode through an
intermediate component (clean cases with large livers between the clean majority and a dilated
style); :func:`split_by_annotations`, which the audit applies after the merge, takes it out again by
its members' own annotations. The largest style is the main mode (the consensus), with the evidence
for it: its share of the cases, and how many of its members, decoded from their own latents,
segment like its centre. When no style holds a clear majority, :attr:`StyleResult.consensus`
is false and the report says so.

The fine partition is a mixture with a generous, fixed number of components
(:func:`fine_components`: a quarter of the cases, 2 to 16), not the BIC choice, because BIC can
pick so few components that a style shares one with the clean majority, and merging cannot
undo that. The thresholds (15% in volume, Dice 0.85) were compared with 10%/0.9, 20%/0.8 and
25%/0.8 on trained demo runs of several seeds (``benchmarks/RESULTS.md``, "Styles"): 10%/0.9
split the clean majority where its decoded UNets drift along the map; 15%/0.85 scored as well
as the looser pairs or better on every run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from HyperSORTLib.analysis.annotations import annotate_like, component_annotation_distance, unlike_members
from HyperSORTLib.analysis.behaviour import BehaviourThresholds, compare_to_reference
from HyperSORTLib.config import STYLE_ANNOTATIONS as ANNOTATIONS, STYLE_LINKAGES as LINKAGES
from HyperSORTLib.config import STYLE_SMALL_COMPONENTS as SMALL_COMPONENTS, STYLE_VOLUME_SCALES as VOLUME_SCALES
from HyperSORTLib.latentmap.clusters import ClusterResult, cluster_latents
from HyperSORTLib.rundir import style_name

__all__ = ["StyleThresholds", "StyleResult", "REMNANT", "ANNOTATION_MIN_MEMBERS", "split_by_annotations",
           "behaviour_distance", "class_volumes", "typical_volumes", "component_adjacency", "merge_components",
           "find_styles", "fine_components", "fine_partition", "style_summary", "row_name", "describe_main_mode",
           "style_stability", "company_agreement"]


@dataclass(frozen=True)
class StyleThresholds:
    """When two decoded UNets count as the same annotation style.

    Args:
        volume: largest relative volume difference of any class (either way round).
        dice: smallest Dice, per class, between the two UNets' label maps.
        consensus_share: the largest style is a clear majority when it holds at least this share
            of all cases ...
        consensus_ratio: ... or at least this many times as many cases as the next style while
            holding at least a third of all cases.
        max_members: members per style decoded from their own latents to measure its consistency.
        linkage: when two groups of components are alike: ``"complete"``, every pair across them
            is; ``"average"``, every pair across them has the same classes (none missing,
            appearing or swapped) and their behaviour distance, averaged over the pairs with the
            components' weights (the cases they hold), is within the thresholds.
        small_components: ``"attach"``: components holding at least the smallest style's cases
            merge among themselves first, and a smaller component then joins the style of its
            nearest neighbour when it segments like it (see :func:`merge_components`);
            ``"merge"``: every component merges on the same terms.
        volume_scale: ``"typical"``: a class that two UNets both draw at under half its usual
            volume across the map (:func:`typical_volumes`), remnants of a class they mostly omit,
            is compared against that usual volume, so two remnants a few percent of the organ
            apart are alike; ``"pair"``: against the two volumes alone (see
            :func:`behaviour_distance`).
        annotations: how the cases' own annotations count (the audit applies it; see
            :func:`split_by_annotations`): ``"split"``, the main mode's members that annotate one
            class differently the same way become a style of their own after the merge;
            ``"members"``, that, and two components, each holding at least
            :data:`ANNOTATION_MIN_MEMBERS` cases, whose members annotate some class differently by
            more than ``volume`` (their median annotation against one UNet of the map, that UNet's
            size trend removed; :func:`~HyperSORTLib.analysis.annotations.component_annotation_distance`)
            are not alike, however alike their decoded UNets segment: it keeps apart a style the
            generator has not yet learnt to reproduce in full, but it can also split a dataset of
            few patients by patient, where the UNet errs differently on each anatomy
            (``benchmarks/RESULTS.md``, "The cases' own annotations in the styles"); ``"ignore"``,
            the decoded UNets alone decide.
    """

    volume: float = 0.15
    dice: float = 0.85
    consensus_share: float = 0.5
    consensus_ratio: float = 2.0
    max_members: int = 12
    linkage: str = LINKAGES[0]
    small_components: str = SMALL_COMPONENTS[0]
    volume_scale: str = VOLUME_SCALES[0]
    annotations: str = ANNOTATIONS[0]

    def __post_init__(self) -> None:
        if not 0.0 < float(self.volume) < 1.0:
            raise ValueError(f"StyleThresholds.volume must lie in (0, 1); found {self.volume!r}")
        if not 0.0 < float(self.dice) < 1.0:
            raise ValueError(f"StyleThresholds.dice must lie in (0, 1); found {self.dice!r}")
        if not 0.0 < float(self.consensus_share) <= 1.0:
            raise ValueError(f"StyleThresholds.consensus_share must lie in (0, 1]; found {self.consensus_share!r}")
        if float(self.consensus_ratio) < 1.0:
            raise ValueError(f"StyleThresholds.consensus_ratio must be >= 1; found {self.consensus_ratio!r}")
        if isinstance(self.max_members, bool) or not isinstance(self.max_members, int) or self.max_members < 0:
            raise ValueError(f"StyleThresholds.max_members must be an integer >= 0; found {self.max_members!r}")
        if self.linkage not in LINKAGES:
            raise ValueError(f"StyleThresholds.linkage must be one of {', '.join(LINKAGES)}; found {self.linkage!r}")
        if self.small_components not in SMALL_COMPONENTS:
            raise ValueError(f"StyleThresholds.small_components must be one of {', '.join(SMALL_COMPONENTS)}; found "
                             f"{self.small_components!r}")
        if self.volume_scale not in VOLUME_SCALES:
            raise ValueError(f"StyleThresholds.volume_scale must be one of {', '.join(VOLUME_SCALES)}; found "
                             f"{self.volume_scale!r}")
        if self.annotations not in ANNOTATIONS:
            raise ValueError(f"StyleThresholds.annotations must be one of {', '.join(ANNOTATIONS)}; found "
                             f"{self.annotations!r}")


# eq=False: array fields make generated __eq__/__hash__ ambiguous.
@dataclass(frozen=True, eq=False)
class StyleResult:
    """The styles of a latent map, and the isolated groups that are not styles.

    Rows ``0 .. n_styles - 1`` are styles, largest first; the rows after them are isolated groups
    (fewer than ``min_style_size`` cases, segmenting unlike every neighbouring style), largest
    first. Every row has a centre: the centre of its heaviest mixture component, the latent
    point whose UNet segments the way the row's cases are annotated.

    Attributes:
        labels: row of every sample ``[N]``.
        n_clusters: number of rows (styles and isolated groups).
        n_styles: number of styles.
        centers: ``[n_clusters, D]``.
        sizes: cases per row.
        weights: ``sizes / N``.
        components: the mixture components (labels of ``mixture``) merged into each row.
        is_style: ``[n_clusters]``; false for the isolated groups.
        main_cluster: row of the main mode: the largest style (the largest group when there are
            no styles at all).
        consensus: whether the main mode holds a clear majority (see :class:`StyleThresholds`).
        consistency: per row, the share of its checked members whose own UNet segments like the
            row's centre; NaN where none was checked.
        n_checked: members checked per row.
        distance: distance between the mixture components (<= 1: alike): their decoded UNets' behaviour
            distance, or their members' annotations' when larger and compared.
        adjacency: which mixture components touch in the latent map.
        mixture: the fine partition the styles were merged from.
        thresholds: what "alike" meant.
        min_style_size: the smallest style.
    """

    labels: np.ndarray
    n_clusters: int
    n_styles: int
    centers: np.ndarray
    sizes: np.ndarray
    weights: np.ndarray
    components: tuple[tuple[int, ...], ...]
    is_style: np.ndarray
    main_cluster: int
    consensus: bool
    consistency: np.ndarray
    n_checked: np.ndarray
    distance: np.ndarray
    adjacency: np.ndarray
    mixture: ClusterResult
    thresholds: StyleThresholds
    min_style_size: int

    def members(self, row: int, case_ids: Sequence[str]) -> list[str]:
        """Case ids of one row, in the run's order."""
        return [case_ids[i] for i in np.flatnonzero(self.labels == row)]

    @property
    def main_share(self) -> float:
        """Share of all cases that the main mode holds."""
        return float(self.sizes[self.main_cluster]) / max(int(self.sizes.sum()), 1)


# --------------------------------------------------------------------------- pairwise behaviour
#: A class drawn at less than this share of its usual volume is a remnant (see :func:`behaviour_distance`).
REMNANT = 0.5
#: Members a component needs before its members' annotations are compared with another's: the
#: median of fewer is one annotation's noise (see :attr:`StyleThresholds.annotations`).
ANNOTATION_MIN_MEMBERS = 3


def behaviour_distance(maps_a: Sequence[np.ndarray], maps_b: Sequence[np.ndarray], voxel_ml: Sequence[float],
                       class_names: Sequence[str], thresholds: StyleThresholds = StyleThresholds(),
                       typical_ml: Sequence[float] | None = None) -> float:
    """How differently two UNets segment the same probe cases, in units of the thresholds.

    The largest, over the foreground classes, of the volume difference over the smaller volume
    (``|volume change|``, either way round) in units of ``volume``, and of the voxels the two
    label maps disagree on over their summed volume (``1 - Dice``) in units of ``1 - dice``;
    infinite when a class is missing, appears, is swapped or is labelled as another in either
    direction. At most 1 means "alike".

    With ``typical_ml`` (per class, background first: the class's usual volume per probe case
    across the map, :func:`typical_volumes`), a class that both UNets draw at less than
    :data:`REMNANT` of its usual volume is measured against that volume: two UNets that each keep
    a remnant of a class they mostly omit (a spleen 70% and 77% smaller than usual) differ by 7%
    of a spleen, not by a third of the remnant, and their remnants' poor overlap is a handful of
    voxels. Every other comparison is the same as without it.

    Example:
        >>> ref = np.zeros((10, 10, 10), np.uint8); ref[2:6, 2:6, 2:6] = 1
        >>> big = np.zeros_like(ref); big[2:7, 2:6, 2:6] = 1
        >>> round(behaviour_distance([ref], [big], [0.008], ["background", "liver"]), 2)  # 25% larger, 15% allowed
        1.67
        >>> # ... but both are remnants of an organ usually 4 ml large: they differ by 3% of it
        >>> round(behaviour_distance([ref], [big], [0.008], ["background", "liver"], typical_ml=[0, 4.0]), 2)
        0.21
    """
    words = BehaviourThresholds(volume=thresholds.volume, dice=thresholds.dice)
    typical = None if typical_ml is None else np.asarray(typical_ml, dtype=np.float64).reshape(-1)
    if typical is not None and (typical.size != len(class_names) or not np.all(np.isfinite(typical))
                                or np.any(typical < 0)):
        raise ValueError(f"typical_ml must hold one volume >= 0 (ml) per class, {len(class_names)} in all; found "
                         f"{typical.tolist()}")
    worst = 0.0
    for ref, other in ((maps_a, maps_b), (maps_b, maps_a)):
        for k, c in enumerate(compare_to_reference(ref, other, voxel_ml, class_names, words).classes, start=1):
            if c.missing or c.appears or c.swapped_with or c.labelled_as:
                return float("inf")
            usual = 0.0
            if typical is not None and max(c.volume_ml, c.reference_volume_ml) < REMNANT * typical[k]:
                usual = float(typical[k])  # both keep only a remnant of the class
            smaller = max(min(c.volume_ml, c.reference_volume_ml), usual)
            summed = max(c.volume_ml + c.reference_volume_ml, 2.0 * usual)
            if smaller > 0:
                worst = max(worst, abs(c.volume_ml - c.reference_volume_ml) / smaller / thresholds.volume)
            elif c.volume_ml > 0 or c.reference_volume_ml > 0:  # empty in one, present (below the "appears" floor)
                worst = max(worst, 1.0 / thresholds.volume)
            disagree = (1.0 - c.dice) * (c.volume_ml + c.reference_volume_ml) / summed if summed > 0 else 0.0
            worst = max(worst, disagree / (1.0 - thresholds.dice))
    return float(worst)


def class_volumes(maps: Sequence[np.ndarray], voxel_ml: Sequence[float], n_classes: int) -> np.ndarray:
    """Mean volume (ml) per probe case of every class, background first, in one UNet's label maps."""
    volumes = np.zeros(n_classes)
    for label_map, ml in zip(maps, voxel_ml):
        volumes += np.bincount(np.asarray(label_map, dtype=np.int64).ravel(), minlength=n_classes)[:n_classes] * ml
    return volumes / max(len(maps), 1)


def typical_volumes(component_maps: Sequence[Sequence[np.ndarray]], weights: Sequence[float],
                    voxel_ml: Sequence[float], n_classes: int) -> np.ndarray:
    """Every class's usual volume per probe case across the map: the median, over the components'
    decoded UNets weighted by the cases each holds, of the class's volume under that UNet.

    Example:
        >>> full = [np.array([0, 1, 1, 1])]; remnant = [np.array([0, 0, 0, 1])]
        >>> typical_volumes([full, full, remnant], [5, 4, 6], [1.0], 2).tolist()  # 9 of 15 cases draw it whole
        [1.0, 3.0]
    """
    volumes = np.asarray([class_volumes(m, voxel_ml, n_classes) for m in component_maps], dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if volumes.shape[0] != w.size or w.size == 0 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"need one weight >= 0 per component ({volumes.shape[0]}), not all zero; found {w.tolist()}")
    typical = np.empty(n_classes)
    for k in range(n_classes):
        order = np.argsort(volumes[:, k], kind="stable")
        cumulative = np.cumsum(w[order])
        typical[k] = volumes[order[np.searchsorted(cumulative, 0.5 * cumulative[-1])], k]
    return typical


def component_adjacency(mixture: ClusterResult, n_points: int = 21) -> np.ndarray:
    """Which mixture components touch: ``[K, K]`` booleans (the diagonal is true).

    Two components touch when every point on the segment between their centres is assigned to
    one of the two.
    """
    k = mixture.n_clusters
    relabel = np.empty(k, dtype=np.int64)
    relabel[np.asarray(mixture.component_order)] = np.arange(k)
    centres = np.asarray(mixture.centers, dtype=np.float64)
    t = np.linspace(0.0, 1.0, n_points)[:, None]
    touch = np.eye(k, dtype=bool)
    for i in range(k):
        for j in range(i + 1, k):
            points = centres[i] + t * (centres[j] - centres[i])
            assigned = relabel[mixture.mixture.predict(points)]
            touch[i, j] = touch[j, i] = bool(np.isin(assigned, (i, j)).all())
    return touch


def merge_components(distance: np.ndarray, adjacency: np.ndarray,
                     closeness: np.ndarray | None = None, linkage: str = "complete",
                     weights: np.ndarray | None = None, first_weight: float = 0.0) -> list[list[int]]:
    """Merging of components that are alike and touch, complete- or average-linkage.

    Two groups may merge when they are alike and at least one pair across them touches. Alike,
    with ``linkage="complete"``: every pair across them is (``distance <= 1``); with
    ``"average"``: no pair across them differs in kind (an infinite ``distance``: a class missing,
    appearing or swapped), and the mean ``distance`` over the pairs, each weighted by the product
    of its components' ``weights``, is at most 1. Of the groups that may merge, the pair closest in
    ``closeness`` (the smallest entry across them: e.g. the distance between component centres in
    the latent map) merges first; without ``closeness``, the most alike pair (smallest largest
    ``distance`` across them). The order matters when a component segments like two styles that
    differ from each other: it joins the one it merges with first, and the other can then no
    longer join.

    With ``first_weight``, the components holding at least that weight (the smallest style's
    cases) merge among themselves first. Then each smaller component (largest first) joins the
    group of the nearest component it touches, when it segments like that component and like
    nothing different in kind in its group: a pair of cases at the edge of a style, whose centre
    sits where few cases are, can then neither keep two style-sized components apart (by merging
    with one of them first) nor stay out of the style it continues. What is left merges as above;
    a small component alike to no neighbour stays apart, a candidate error.

    Example:
        >>> d = np.array([[0, .5, 3], [.5, 0, .8], [3, .8, 0]])
        >>> merge_components(d, np.ones((3, 3), bool))  # 0 and 2 differ: 1 joins the more alike one
        [[0, 1], [2]]
        >>> far = np.array([[0, 4, 9], [4, 0, 1], [9, 1, 0]])  # ... or, by closeness, the nearer one
        >>> merge_components(d, np.ones((3, 3), bool), closeness=far)
        [[0], [1, 2]]
        >>> drift = np.array([[0, .6, 1.2], [.6, 0, .6], [1.2, .6, 0]])  # ends 20 % apart, 15 % allowed
        >>> merge_components(drift, np.ones((3, 3), bool), linkage="average", weights=np.array([5, 5, 1]))
        [[0, 1, 2]]
        >>> chain = np.array([[0, .7, 1.2], [.7, 0, .6], [1.2, .6, 0]])  # 2 is small, and nearest to 1
        >>> near = np.array([[0, .3, .5], [.3, 0, .2], [.5, .2, 0]])
        >>> merge_components(chain, np.ones((3, 3), bool), closeness=near, weights=np.array([10, 8, 2]))
        [[0], [1, 2]]
        >>> merge_components(chain, np.ones((3, 3), bool), closeness=near, weights=np.array([10, 8, 2]),
        ...                  first_weight=3)
        [[0, 1, 2]]
    """
    distance = np.asarray(distance, dtype=np.float64)
    adjacency = np.asarray(adjacency, dtype=bool)
    if distance.ndim != 2 or distance.shape[0] != distance.shape[1] or adjacency.shape != distance.shape:
        raise ValueError(f"distance and adjacency must be square and of one shape; found {distance.shape} "
                         f"and {adjacency.shape}")
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {', '.join(LINKAGES)}; found {linkage!r}")
    order = distance if closeness is None else np.asarray(closeness, dtype=np.float64)
    if order.shape != distance.shape:
        raise ValueError(f"closeness must have the shape of distance, {distance.shape}; found {order.shape}")
    weights = np.ones(distance.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (distance.shape[0],) or not (weights >= 0).all():
        raise ValueError(f"weights must be {distance.shape[0]} numbers >= 0, one per component; found {weights}")

    def alike(a: list[int], b: list[int], across_index: tuple[np.ndarray, np.ndarray]) -> bool:
        across = distance[across_index]
        if linkage == "complete":
            return float(across.max()) <= 1.0
        if not np.isfinite(across).all():
            return False
        pair_weights = np.outer(weights[a], weights[b])
        if pair_weights.sum() == 0:  # components that hold no case: every pair counts alike
            pair_weights = np.ones_like(pair_weights)
        return float((pair_weights * across).sum() / pair_weights.sum()) <= 1.0

    def rank(across_index: tuple[np.ndarray, np.ndarray]) -> float:
        return float(order[across_index].max() if closeness is None else order[across_index].min())

    def agglomerate(groups: list[list[int]], eligible: np.ndarray) -> list[list[int]]:
        while True:
            best: tuple[float, int, int] | None = None
            for a in range(len(groups)):
                for b in range(a + 1, len(groups)):
                    if not (eligible[groups[a]].all() and eligible[groups[b]].all()):
                        continue
                    across = np.ix_(groups[a], groups[b])
                    if not adjacency[across].any() or not alike(groups[a], groups[b], across):
                        continue
                    if best is None or rank(across) < best[0]:
                        best = (rank(across), a, b)
            if best is None:
                return groups
            _, a, b = best
            groups[a] = groups[a] + groups[b]
            del groups[b]

    k = distance.shape[0]
    groups = [[i] for i in range(k)]
    if first_weight > 0:
        large = weights >= first_weight
        groups = agglomerate(groups, large)
        grouped = [g for g in groups if large[g].all()]
        for small in sorted(np.flatnonzero(~large), key=lambda c: (-weights[c], c)):
            neighbours = [(float(order[small, c]), n, c) for n, g in enumerate(grouped) for c in g
                          if adjacency[small, c]]
            if neighbours:
                _, n, nearest = min(neighbours)
                if distance[small, nearest] <= 1.0 and np.isfinite(distance[small, grouped[n]]).all():
                    grouped[n].append(int(small))
                    continue
            grouped.append([int(small)])
        groups = grouped
    return sorted(sorted(g) for g in agglomerate(groups, np.ones(k, dtype=bool)))


# --------------------------------------------------------------------------- styles
def fine_components(n_cases: int) -> int:
    """Components of the fine partition the styles are merged from: a quarter of the cases, 2 to 16."""
    return int(min(16, max(2, math.ceil(n_cases / 4)), max(1, n_cases - 1)))


def fine_partition(latents: np.ndarray, seed: int = 0) -> ClusterResult:
    """The mixture of :func:`fine_components` components that :func:`find_styles` merges."""
    k = fine_components(len(latents))
    return cluster_latents(latents, max_components=k, min_components=k, seed=seed)


def find_styles(latents: np.ndarray, mixture: ClusterResult, decode: Callable[[np.ndarray], list[np.ndarray]],
                voxel_ml: Sequence[float], class_names: Sequence[str], min_style_size: int,
                thresholds: StyleThresholds = StyleThresholds(), seed: int = 0,
                component_maps: Sequence[list[np.ndarray]] | None = None,
                offsets: np.ndarray | None = None) -> tuple[StyleResult, list[list[np.ndarray]]]:
    """Merge the mixture's components into styles by what their decoded UNets segment.

    Args:
        latents: the latent table ``[N, D]``.
        mixture: a fine partition of it (:func:`~HyperSORTLib.latentmap.clusters.cluster_latents`).
        decode: latent point ``[D]`` -> label maps of the probe cases under its UNet.
        voxel_ml: voxel volume of each probe case (ml).
        class_names: one per class, background first.
        min_style_size: the smallest group reported as a style.
        thresholds: what "alike" means.
        seed: which members are checked when a style has more than ``thresholds.max_members``.
        component_maps: the probe label maps of every component's centre, when already decoded.
        offsets: ``[N, C - 1]``, how each case's annotation of every foreground class differs from
            the usual one (:func:`~HyperSORTLib.analysis.annotations.annotation_offsets`); with
            ``thresholds.annotations == "members"``, components whose members annotate
            differently are not merged. ``None`` compares the decoded UNets alone.

    Returns:
        The :class:`StyleResult` and the probe label maps of every row's centre.
    """
    latents = np.asarray(latents, dtype=np.float64)
    k = mixture.n_clusters
    maps = list(component_maps) if component_maps is not None else [decode(mixture.centers[c]) for c in range(k)]
    typical = (typical_volumes(maps, mixture.sizes, voxel_ml, len(class_names))
               if thresholds.volume_scale == "typical" else None)
    distance = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            distance[i, j] = distance[j, i] = behaviour_distance(maps[i], maps[j], voxel_ml, class_names, thresholds,
                                                                 typical)
    if offsets is not None and thresholds.annotations == "members":
        offsets = np.asarray(offsets, dtype=np.float64)
        if offsets.shape != (len(latents), len(class_names) - 1):
            raise ValueError(f"offsets must be one row per case and one column per foreground class, "
                             f"{(len(latents), len(class_names) - 1)}; found {offsets.shape}")
        distance = np.maximum(distance, component_annotation_distance(offsets, mixture.labels, k, thresholds.volume,
                                                                      ANNOTATION_MIN_MEMBERS))
    adjacency = component_adjacency(mixture)
    component_centres = np.asarray(mixture.centers, dtype=np.float64)
    apart = np.linalg.norm(component_centres[:, None] - component_centres[None], axis=-1)
    groups = merge_components(distance, adjacency, closeness=apart, linkage=thresholds.linkage,
                              weights=np.asarray(mixture.sizes, dtype=np.float64),
                              first_weight=min_style_size if thresholds.small_components == "attach" else 0)

    sizes = [int(sum(mixture.sizes[c] for c in g)) for g in groups]
    styles = sorted((g for g, s in zip(groups, sizes) if s >= min_style_size), key=lambda g: -_size(mixture, g))
    isolated = sorted((g for g, s in zip(groups, sizes) if s < min_style_size), key=lambda g: -_size(mixture, g))
    rows = [*styles, *isolated]
    component_row = np.empty(k, dtype=np.int64)
    for r, g in enumerate(rows):
        component_row[g] = r
    labels = component_row[np.asarray(mixture.labels)]
    heaviest = [max(g, key=lambda c: (mixture.weights[c], -c)) for g in rows]
    centres = np.asarray([mixture.centers[c] for c in heaviest], dtype=np.float64)
    row_sizes = np.asarray([_size(mixture, g) for g in rows], dtype=np.int64)
    is_style = np.asarray([r < len(styles) for r in range(len(rows))], dtype=bool)

    main = 0
    consensus = _consensus(row_sizes[is_style], int(row_sizes.sum()), thresholds)

    rng = np.random.default_rng(seed)
    consistency = np.full(len(rows), np.nan)
    checked = np.zeros(len(rows), dtype=np.int64)
    for r in range(len(rows)):
        if not is_style[r] or thresholds.max_members == 0:
            continue
        members = np.flatnonzero(labels == r)
        if len(members) > thresholds.max_members:
            members = np.sort(rng.choice(members, thresholds.max_members, replace=False))
        centre_maps = maps[heaviest[r]]
        alike = [behaviour_distance(centre_maps, decode(latents[i]), voxel_ml, class_names, thresholds,
                                    typical) <= 1.0 for i in members]
        checked[r] = len(alike)
        consistency[r] = float(np.mean(alike)) if alike else np.nan

    result = StyleResult(labels=labels.astype(np.int64), n_clusters=len(rows), n_styles=len(styles),
                         centers=centres, sizes=row_sizes, weights=row_sizes / max(int(row_sizes.sum()), 1),
                         components=tuple(tuple(int(c) for c in g) for g in rows), is_style=is_style,
                         main_cluster=main, consensus=consensus, consistency=consistency, n_checked=checked,
                         distance=distance, adjacency=adjacency, mixture=mixture, thresholds=thresholds,
                         min_style_size=int(min_style_size))
    return result, [maps[c] for c in heaviest]


def _consensus(style_sizes: np.ndarray, n_cases: int, thresholds: StyleThresholds) -> bool:
    """Whether the largest style (``style_sizes``, largest first) holds a clear majority of ``n_cases``."""
    if len(style_sizes) == 0:
        return False
    share = style_sizes[0] / max(n_cases, 1)
    runner_up = style_sizes[1] if len(style_sizes) > 1 else 0
    return bool(share >= thresholds.consensus_share
                or (share >= 1 / 3 and style_sizes[0] >= thresholds.consensus_ratio * runner_up))


def split_by_annotations(styles: StyleResult, latents: np.ndarray, ratios: np.ndarray, offsets: np.ndarray | None
                         ) -> tuple[StyleResult, dict[int, tuple[int, float]], list[int]]:
    """The main mode's members that annotate one class differently the same way, as a style of their
    own; and the other styles' members that annotate like the main mode, back in it.

    A style the generator has not yet learnt to reproduce can stay inside the main mode: its cases'
    latents have not moved away, so no merge rule can see it. Their annotations still differ: the
    members :func:`~HyperSORTLib.analysis.annotations.unlike_members` names (their annotation against
    the main mode's UNet, beyond the volume threshold and three robust standard deviations of the
    class) are grouped by class and direction (larger or smaller), and a group of at least
    ``min_style_size`` members leaves the main mode as a style, its centre the mean of its
    members' latents. Smaller groups stay, named by the annotation check. The other way round, a
    member of another style whose annotation differs from that style's usual member but is like
    the main mode's usual member (:func:`~HyperSORTLib.analysis.annotations.annotate_like`; a clean
    case with a large liver whose latent drifted towards a dilated style) joins the main mode. A
    style left with fewer than ``min_style_size`` cases becomes an isolated group. The rows are
    ordered again (styles largest first) and the main mode and consensus found again; the
    consistency of every row, measured before, is kept.

    Returns:
        The styles; for every row found this way, its class column and its members' median ratio
        to the main mode's usual annotation; and for every row the row it was before (-1 for the
        rows found this way).
    """
    volume = styles.thresholds.volume
    main = styles.main_cluster
    members = np.flatnonzero(styles.labels == main)
    groups: dict[tuple[int, bool], list[tuple[int, float]]] = {}
    for i, k, relative in unlike_members(ratios, offsets, members, volume):
        groups.setdefault((k, relative > 1.0), []).append((i, relative))
    found = [(k, sorted(i for i, _ in group), float(np.median([r for _, r in group])))
             for (k, _), group in sorted(groups.items()) if len(group) >= styles.min_style_size]
    staying = np.setdiff1d(members, [i for _, cases, _ in found for i in cases])
    back = []
    for row in range(styles.n_clusters):
        if row != main and styles.is_style[row]:
            unlike = [i for i, _, _ in unlike_members(ratios, offsets, np.flatnonzero(styles.labels == row), volume)]
            back += [i for i, like in zip(unlike, annotate_like(ratios, offsets, staying, unlike, volume)) if like]
    if not found and not back:
        return styles, {}, list(range(styles.n_clusters))
    labels = styles.labels.copy()
    labels[back] = main
    centres = list(styles.centers)
    components = list(styles.components)
    consistency, checked = list(styles.consistency), list(styles.n_checked)
    is_style = list(styles.is_style)
    how: dict[int, tuple[int, float]] = {}
    for k, cases, relative in found:
        row = len(centres)
        labels[cases] = row
        centres.append(np.asarray(latents, dtype=np.float64)[cases].mean(axis=0))
        components.append(())
        consistency.append(np.nan)
        checked.append(0)
        is_style.append(True)
        how[row] = (k, relative)
    sizes = np.bincount(labels, minlength=len(centres))
    flags = np.asarray(is_style, dtype=bool) & (sizes >= styles.min_style_size)
    flags[main] = styles.is_style[main]
    order = sorted((r for r in range(len(centres)) if sizes[r] > 0), key=lambda r: (not flags[r], -sizes[r], r))
    new_row = np.full(len(centres), -1, dtype=np.int64)  # a row left empty is dropped
    new_row[order] = np.arange(len(order))
    n_styles = int(flags[order].sum())
    result = dataclasses.replace(
        styles, labels=new_row[labels], n_clusters=len(order), n_styles=n_styles,
        centers=np.asarray([centres[r] for r in order]), sizes=sizes[order].astype(np.int64),
        weights=sizes[order] / max(int(sizes.sum()), 1), components=tuple(components[r] for r in order),
        is_style=flags[order], main_cluster=0,
        consensus=_consensus(sizes[order][:n_styles], int(sizes.sum()), styles.thresholds),
        consistency=np.asarray([consistency[r] for r in order], dtype=np.float64),
        n_checked=np.asarray([checked[r] for r in order], dtype=np.int64))
    before = [r if r < styles.n_clusters else -1 for r in order]
    return result, {int(new_row[r]): value for r, value in how.items()}, before


def _size(mixture: ClusterResult, group: Sequence[int]) -> int:
    return int(sum(int(mixture.sizes[c]) for c in group))


def style_summary(result: StyleResult) -> dict[str, Any]:
    """The main-mode evidence as plain numbers (for ``metrics.json``)."""
    main = result.main_cluster
    return {"n_styles": int(result.n_styles), "n_isolated_groups": int(result.n_clusters - result.n_styles),
            "consensus": bool(result.consensus), "main_share": round(result.main_share, 4),
            "main_consistency": None if not np.isfinite(result.consistency[main]) else
            round(float(result.consistency[main]), 4), "main_checked": int(result.n_checked[main]),
            "thresholds": {"volume": result.thresholds.volume, "dice": result.thresholds.dice,
                           "consensus_share": result.thresholds.consensus_share,
                           "consensus_ratio": result.thresholds.consensus_ratio,
                           "linkage": result.thresholds.linkage, "small_components": result.thresholds.small_components,
                           "volume_scale": result.thresholds.volume_scale,
                           "annotations": result.thresholds.annotations,
                           "annotation_min_members": ANNOTATION_MIN_MEMBERS},
            "min_style_size": result.min_style_size}


def row_name(result: StyleResult, row: int) -> str:
    """``style 2``, ``style 0 (main mode)`` or ``isolated 5``: how the report and the terminal name a row
    (:func:`HyperSORTLib.rundir.style_name`)."""
    return style_name(row, "style" if result.is_style[row] else "isolated", row == result.main_cluster)


def describe_main_mode(result: StyleResult) -> str:
    """The main mode and the evidence for it, in one sentence."""
    main = result.main_cluster
    n = int(result.sizes.sum())
    size = int(result.sizes[main])
    checked = int(result.n_checked[main])
    evidence = ""
    if checked:
        alike = int(round(result.consistency[main] * checked))
        evidence = (f"; {alike} of {checked} of its members, decoded from their own latents, segment like its "
                    f"centre")
    if not result.n_styles:
        return (f"no group of at least {result.min_style_size} cases segments alike, so there is no style and no "
                f"consensus; the largest group ({size} of {n} cases) is the reference for the descriptions")
    others = [int(s) for s in result.sizes[result.is_style]][1:]
    runner = f" (next style: {others[0]})" if others else ""
    if result.consensus:
        return f"style {main} is the consensus: {size} of {n} cases ({result.main_share:.0%}){runner}{evidence}"
    return (f"no style holds a clear majority: the largest, style {main}, has {size} of {n} cases{runner}; the "
            f"descriptions are relative to it, but it is not a consensus to correct the others towards{evidence}")


def style_stability(latents: np.ndarray, result: StyleResult, refit: Callable[[int], StyleResult],
                    seeds: Sequence[int]) -> np.ndarray:
    """How often each case keeps its style company when the styles are found again.

    For every seed, ``refit(seed)`` finds the styles from a mixture fitted with that seed. A case's
    stability is the mean, over those refits and over every other case, of whether the two are
    still together (same row) or still apart exactly when they were in ``result``: 1.0 means the
    case's style never changed.

    Returns:
        ``[N]`` values in [0, 1]; NaN when ``seeds`` is empty.
    """
    n = len(latents)
    if not seeds:
        return np.full(n, np.nan)
    agree = np.zeros(n)
    for seed in seeds:
        agree += company_agreement(result.labels, refit(int(seed)).labels)
    return agree / len(seeds)


def company_agreement(labels: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per case, the share of the other cases with which it is together (the same label) in both
    groupings or apart in both; the label values themselves need not match.

    Example:
        >>> company_agreement(np.array([0, 0, 1, 1]), np.array([5, 5, 5, 7]))
        array([0.66666667, 0.66666667, 0.        , 0.66666667])
    """
    labels, other = np.asarray(labels), np.asarray(other)
    n = len(labels)
    same = (labels[:, None] == labels[None, :]) == (other[:, None] == other[None, :])
    np.fill_diagonal(same, False)
    return same.sum(1) / max(n - 1, 1)
