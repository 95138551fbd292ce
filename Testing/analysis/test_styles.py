"""Styles: mixture components merged by what their decoded UNets segment, and the main mode."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from HyperSORTLib.analysis.annotations import annotation_offsets, component_annotation_distance
from HyperSORTLib.analysis.styles import (
    StyleThresholds,
    behaviour_distance,
    class_volumes,
    describe_main_mode,
    find_styles,
    merge_components,
    row_name,
    style_stability,
    typical_volumes,
)
from HyperSORTLib.latentmap import cluster_latents

NAMES = ("background", "liver", "spleen")
SHAPE = (24, 24, 24)


def _maps(liver_half: int = 6, spleen: bool = True, swap: bool = False, spleen_depth: int = 8) -> list[np.ndarray]:
    """One probe case: a liver cube of half-width ``liver_half`` and a spleen cube (its first
    ``spleen_depth`` of 8 slices: fewer draw a remnant of it)."""
    label = np.zeros(SHAPE, np.uint8)
    liver, other = (2, 1) if swap else (1, 2)
    label[12 - liver_half:12 + liver_half, 2:10, 2:10] = liver
    if spleen:
        label[6:6 + spleen_depth, 14:22, 14:22] = other
    return [label]


# --------------------------------------------------------------------------- distance
def test_behaviour_distance_in_units_of_the_thresholds():
    base = _maps(6)
    assert behaviour_distance(base, base, [0.001], NAMES) == 0.0
    # 7/6 in width: liver volume +16.7% -> 1.67 units of 10%; Dice 12/13 = 0.923 -> 0.77 units.
    strict = StyleThresholds(volume=0.1, dice=0.9)
    assert behaviour_distance(base, _maps(7), [0.001], NAMES, strict) == pytest.approx(1 / 6 / 0.1, rel=1e-6)
    assert behaviour_distance(base, _maps(7), [0.001], NAMES) == pytest.approx(1 / 6 / 0.15, rel=1e-6)
    assert behaviour_distance(base, _maps(7), [0.001], NAMES, StyleThresholds(volume=0.2, dice=0.9)) < 1.0
    # A class missing, or two classes trading places, is never "alike", whatever the thresholds.
    loose = StyleThresholds(volume=0.9, dice=0.01)
    assert behaviour_distance(base, _maps(6, spleen=False), [0.001], NAMES, loose) == float("inf")
    assert behaviour_distance(_maps(6, spleen=False), base, [0.001], NAMES, loose) == float("inf")
    assert behaviour_distance(base, _maps(6, swap=True), [0.001], NAMES, loose) == float("inf")


def test_two_remnants_of_a_mostly_omitted_class_are_alike_measured_against_its_usual_volume():
    full, most, more = _maps(6), _maps(6, spleen_depth=2), _maps(6, spleen_depth=3)  # spleen 100, 25, 37.5 %
    typical = typical_volumes([full, full, most, more], [20, 10, 5, 5], [0.001], len(NAMES))
    np.testing.assert_allclose(typical, class_volumes(full, [0.001], len(NAMES)))  # 30 of 40 cases draw it whole
    # Against each other the remnants differ by half the smaller one (and overlap poorly) ...
    assert behaviour_distance(most, more, [0.001], NAMES) == pytest.approx(0.5 / 0.15)
    # ... against the usual spleen by 1/8 of it: 0.83 units of 15 %, and alike.
    assert behaviour_distance(most, more, [0.001], NAMES, typical_ml=typical) == pytest.approx(0.125 / 0.15)
    # A class of its usual size is measured as before, and a remnant is never alike the whole class.
    assert behaviour_distance(full, _maps(7), [0.001], NAMES, typical_ml=typical) == pytest.approx(1 / 6 / 0.15)
    assert behaviour_distance(full, more, [0.001], NAMES, typical_ml=typical) > 4.0
    # Classes below their usual size but not remnants (a liver 5/7 and 6/7 of the usual one) too.
    larger = typical_volumes([_maps(7)], [1], [0.001], len(NAMES))
    assert behaviour_distance(_maps(5), full, [0.001], NAMES, typical_ml=larger) == behaviour_distance(
        _maps(5), full, [0.001], NAMES)
    with pytest.raises(ValueError, match="typical_ml must hold one volume >= 0 .* per class, 3 in all"):
        behaviour_distance(most, more, [0.001], NAMES, typical_ml=[1.0, 2.0])
    with pytest.raises(ValueError, match="one weight >= 0 per component"):
        typical_volumes([full, most], [0, 0], [0.001], len(NAMES))


def test_a_style_that_keeps_remnants_of_an_omitted_class_is_one_style():
    # 24 clean cases; 12 that omit the spleen, in two touching halves whose decoded UNets keep a
    # remnant of a quarter and of three eighths of it (a style not yet trained to omit it whole).
    rng = np.random.default_rng(3)
    latents = np.concatenate([rng.normal([0.0, 0.0], 0.1, (24, 2)), rng.normal([2.0, -0.3], 0.1, (6, 2)),
                              rng.normal([2.0, 0.3], 0.1, (6, 2))])

    def decode(z: np.ndarray) -> list[np.ndarray]:
        if z[0] < 1.0:
            return _maps(6)
        return _maps(6, spleen_depth=2 if z[1] < 0.0 else 3)

    mixture = cluster_latents(latents, max_components=4, min_components=4, seed=0)
    assert len(set(mixture.labels[24:])) >= 2  # the omitting cases span several components
    usual, _ = find_styles(latents, mixture, decode, [0.001], NAMES, min_style_size=3)
    pair, _ = find_styles(latents, mixture, decode, [0.001], NAMES, min_style_size=3,
                          thresholds=StyleThresholds(volume_scale="pair"))
    assert usual.n_styles == 2 and set(usual.labels[24:]) == {1} and set(usual.labels[:24]) == {0}
    assert pair.n_styles == 3 and len(set(pair.labels[24:])) == 2


def test_annotation_offsets_remove_the_unets_size_trend_and_keep_a_style():
    # 30 cases of one protocol whose UNet regresses to the typical liver (small ones drawn too large, large
    # ones too small: the ratio rises with size), and 8 annotated 20 % larger, spread over the same sizes.
    rng = np.random.default_rng(0)
    drawn = np.exp(rng.uniform(np.log(2000), np.log(6000), (38, 1)))
    ratios = (drawn / 3500) ** 0.3 * np.exp(rng.normal(0, 0.02, (38, 1)))
    ratios[30:] *= 1.2
    offsets = annotation_offsets(ratios, drawn)
    plain = np.log(ratios)
    # The raw ratios overlap (a large clean liver looks larger than a small dilated one); the offsets do not.
    assert plain[:30].max() > plain[30:].min()
    assert offsets[:30].max() < offsets[30:].min()
    np.testing.assert_allclose(np.median(offsets[30:]) - np.median(offsets[:30]), np.log(1.2), atol=0.03)
    # An omitted class (ratio 0), one drawn nowhere (inf) and one neither has (NaN) stay finite.
    odd = annotation_offsets(np.array([[0.0, np.inf, np.nan]] * 2), np.array([[100.0, 0.0, 0.0]] * 2))
    np.testing.assert_allclose(odd, [[-np.log(4), np.log(4), 0.0]] * 2)
    with pytest.raises(ValueError, match=r"ratios and drawn must be \[cases, classes\] of one shape"):
        annotation_offsets(np.ones((3, 2)), np.ones((3, 1)))


def test_component_annotation_distance_needs_enough_members():
    offsets = np.log([[1.0], [1.02], [0.99], [1.25], [1.22], [1.3], [1.5]])
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    distance = component_annotation_distance(offsets, labels, 3, 0.15, 3)
    assert distance[0, 1] == pytest.approx(np.log(1.25 / 1.0) / np.log(1.15))
    assert distance[0, 2] == distance[1, 2] == 0.0  # one case is no style's usual annotation
    assert component_annotation_distance(offsets, labels, 3, 0.15, 4).max() == 0.0
    with pytest.raises(ValueError, match="one row of offsets per labelled case"):
        component_annotation_distance(offsets, labels[:3], 3, 0.15, 3)


def test_parts_of_the_map_whose_members_annotate_differently_stay_apart():
    # Two touching groups whose decoded UNets draw the liver only 10 % apart (alike at 15 %), but whose
    # members' own annotations differ by 25 %: the network has not yet learnt the second group's margin.
    rng = np.random.default_rng(1)
    latents = np.concatenate([rng.normal([0.0, 0.0], 0.1, (20, 2)), rng.normal([0.6, 0.0], 0.1, (10, 2))])

    def decode(z: np.ndarray) -> list[np.ndarray]:
        return _maps(10) if z[0] < 0.3 else _maps(11)

    drawn = rng.uniform(3000, 5000, (30, 2))
    ratios = np.ones((30, 2)) * rng.normal(1.0, 0.02, (30, 2))
    ratios[20:, 0] *= 1.25
    offsets = annotation_offsets(ratios, drawn)
    mixture = cluster_latents(latents, max_components=4, min_components=4, seed=0)
    assert np.isin(mixture.labels[:20], mixture.labels[20:]).sum() == 0  # the partition keeps the groups apart
    members = StyleThresholds(annotations="members")
    apart, _ = find_styles(latents, mixture, decode, [0.001], NAMES, min_style_size=3, offsets=offsets,
                           thresholds=members)
    assert apart.n_styles == 2 and set(apart.labels[:20]) == {0} and set(apart.labels[20:]) == {1}
    together, _ = find_styles(latents, mixture, decode, [0.001], NAMES, min_style_size=3, offsets=offsets)
    assert together.n_styles == 1  # by default the decoded UNets alone decide
    # Without offsets the decoded UNets alone decide, whatever the setting.
    assert find_styles(latents, mixture, decode, [0.001], NAMES, min_style_size=3, thresholds=members)[0].n_styles == 1
    with pytest.raises(ValueError, match=r"offsets must be one row per case and one column per foreground class"):
        find_styles(latents, mixture, decode, [0.001], NAMES, min_style_size=3, offsets=offsets[:, :1],
                    thresholds=members)
    with pytest.raises(ValueError, match="annotations must be one of split, members, ignore; found 'all'"):
        StyleThresholds(annotations="all")


def test_merge_components_is_complete_linkage_over_touching_components():
    # A chain 0-1-2 where the ends differ: complete linkage keeps 2 apart from {0, 1}.
    chain = np.array([[0, .4, 1.5], [.4, 0, .9], [1.5, .9, 0]])
    assert merge_components(chain, np.ones((3, 3), bool)) == [[0, 1], [2]]
    # Alike but not touching: no merge.
    alike = np.zeros((2, 2))
    assert merge_components(alike, np.eye(2, dtype=bool)) == [[0], [1]]
    # Touching through a third component merges all three.
    touch = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], bool)
    assert merge_components(np.zeros((3, 3)), touch) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="square"):
        merge_components(np.zeros((2, 3)), np.zeros((2, 3), bool))


def test_merge_order_by_closeness_decides_where_an_in_between_component_goes():
    # 1 segments like both 0 and 2, which differ; 1 is more alike to 2, but nearer to 0.
    distance = np.array([[0, .6, 1.5], [.6, 0, .5], [1.5, .5, 0]])
    apart = np.array([[0, .4, 1.5], [.4, 0, 1.1], [1.5, 1.1, 0]])
    assert merge_components(distance, np.ones((3, 3), bool)) == [[0], [1, 2]]
    assert merge_components(distance, np.ones((3, 3), bool), closeness=apart) == [[0, 1], [2]]
    with pytest.raises(ValueError, match="closeness"):
        merge_components(distance, np.ones((3, 3), bool), closeness=np.zeros((2, 2)))


def test_average_linkage_keeps_a_drifting_style_whole_but_never_merges_a_difference_in_kind():
    # 0 (12 cases) and 1 (8) are alike, 1 and 2 (2 cases) too, but 0 and 2 lie 20 % apart (15 %
    # allowed): complete linkage splits 0 from 1 + 2 (merged first, nearest), average linkage keeps
    # them whole, its case-weighted mean distance being 0.80. 3 (8 cases) is alike to 1 alone: apart
    # either way (a mean of 1.03 from 1 + 2, 1.31 from 0 + 1 + 2).
    distance = np.array([[0, .65, 1.38, 1.54], [.65, 0, .73, .89], [1.38, .73, 0, 1.6], [1.54, .89, 1.6, 0]])
    apart = np.array([[0, .2, .3, .5], [.2, 0, .1, .4], [.3, .1, 0, .4], [.5, .4, .4, 0]])
    sizes = np.array([12, 8, 2, 8])
    touch = np.ones((4, 4), bool)
    assert merge_components(distance, touch, closeness=apart, weights=sizes) == [[0], [1, 2], [3]]
    assert merge_components(distance, touch, closeness=apart, linkage="average", weights=sizes) == [[0, 1, 2], [3]]
    # a class missing (an infinite distance) between any two components forbids the merge
    missing = distance.copy()
    missing[0, 2] = missing[2, 0] = np.inf
    assert merge_components(missing, touch, closeness=apart, linkage="average", weights=sizes) == [[0], [1, 2], [3]]
    with pytest.raises(ValueError, match="linkage must be one of average, complete"):
        merge_components(distance, touch, linkage="single")
    with pytest.raises(ValueError, match="weights"):
        merge_components(distance, touch, linkage="average", weights=np.ones(3))


def test_style_sized_components_merge_before_a_small_one_can_keep_them_apart():
    # The demo's over-split (seed 1): components of 12 and 8 clean cases are alike (0.65), the 8
    # and a 2-case component at the cloud's edge too (0.73), the 12 and the 2 not (1.38). Merged
    # in the order of the map, the 8 takes the 2 first and the 12 can no longer join: two clean
    # styles. With style-sized components first, the 12 and the 8 merge, and the 2 joins the
    # style of its nearest neighbour, the 8, which it segments like.
    distance = np.array([[0, .65, 1.38, 3.0], [.65, 0, .73, 2.5], [1.38, .73, 0, 2.0], [3.0, 2.5, 2.0, 0]])
    apart = np.array([[0, .3, .4, 1.0], [.3, 0, .1, .8], [.4, .1, 0, .7], [1.0, .8, .7, 0]])
    sizes = np.array([12, 8, 2, 8])
    touch = np.ones((4, 4), bool)
    assert merge_components(distance, touch, closeness=apart, weights=sizes) == [[0], [1, 2], [3]]
    assert merge_components(distance, touch, closeness=apart, weights=sizes, first_weight=3) == [[0, 1, 2], [3]]
    # ... but not when it segments unlike that neighbour, or unlike one of its style in kind
    unlike = distance.copy()
    unlike[1, 2] = unlike[2, 1] = 1.1
    assert merge_components(unlike, touch, closeness=apart, weights=sizes, first_weight=3) == [[0, 1], [2], [3]]
    missing = distance.copy()
    missing[0, 2] = missing[2, 0] = np.inf
    assert merge_components(missing, touch, closeness=apart, weights=sizes, first_weight=3) == [[0, 1], [2], [3]]
    # ... nor when it touches no component of the style (it stays apart, a candidate error)
    alone = touch.copy()
    alone[2, :2] = alone[:2, 2] = False
    assert merge_components(distance, alone, closeness=apart, weights=sizes, first_weight=3) == [[0, 1], [2], [3]]


def _liver_maps(extent: int) -> list[np.ndarray]:
    label = np.zeros(SHAPE, np.uint8)
    label[4:4 + extent, 2:10, 2:10] = 1
    label[6:14, 14:22, 14:22] = 2
    return [label]


def test_a_clean_component_that_draws_like_the_biased_style_stays_with_its_neighbours():
    """The demo's failure: the clean cases with the largest livers sit beside the other clean
    cases in the map, but their UNets draw the liver about as much larger (+8 %) as the dilated
    style draws it larger than theirs (+7 %). Merged by behaviour alone they would join the
    dilated style; merged in the order of the map, they stay clean, and the dilated style, 17 %
    above the rest of the clean cases, stays apart."""
    rng = np.random.default_rng(3)
    small = rng.normal([0.0, 0.0], 0.05, (16, 2))
    large = rng.normal([0.45, 0.0], 0.05, (10, 2))
    dilated = rng.normal([1.6, 0.0], 0.05, (10, 2))
    errors = np.array([[4.0, -3.0], [-4.0, -3.5]])
    latents = np.concatenate([small, large, dilated, errors])
    truth = np.array(["clean"] * 26 + ["dilated"] * 10 + ["error"] * 2)

    def decode(z: np.ndarray) -> list[np.ndarray]:
        if z[1] < -2.0:
            return [np.where(m == 2, 0, m).astype(np.uint8) for m in _liver_maps(12)]  # spleen not drawn
        return _liver_maps(12 if z[0] < 0.225 else 13 if z[0] < 1.0 else 14)

    mixture = cluster_latents(latents, max_components=8, seed=0)
    assert {frozenset(truth[mixture.labels == c]) for c in set(mixture.labels)} <= {
        frozenset({"clean"}), frozenset({"dilated"}), frozenset({"error"})}  # a pure fine partition
    styles, _ = find_styles(latents, mixture, decode, [0.001], NAMES, min_style_size=3,
                            thresholds=StyleThresholds(linkage="complete"))
    main = styles.labels == styles.main_cluster
    assert set(truth[main]) == {"clean"} and main.sum() == 26
    dilated_rows = set(styles.labels[truth == "dilated"])
    assert len(dilated_rows) == 1 and set(truth[styles.labels == dilated_rows.pop()]) == {"dilated"}
    # Average linkage (the default) lets the drift carry the dilated style into the main mode; its
    # members' own annotations, 22 % larger than the clean cases' against the main mode's UNet, take it out again.
    from HyperSORTLib.analysis.styles import split_by_annotations

    merged, _ = find_styles(latents, mixture, decode, [0.001], NAMES, min_style_size=3)
    assert set(truth[merged.labels == merged.main_cluster]) == {"clean", "dilated"}
    ratios = np.exp(rng.normal(0.0, 0.02, (38, 2)))
    ratios[truth == "dilated", 0] *= 1.22
    split, found, _ = split_by_annotations(merged, latents, ratios, np.log(ratios))
    assert set(truth[split.labels == split.main_cluster]) == {"clean"}
    assert len(found) == 1 and set(truth[split.labels == next(iter(found))]) == {"dilated"}


# --------------------------------------------------------------------------- styles on a constructed map
def _map_and_decoder(rng: np.random.Generator):
    """30 clean cases along an arc (a mixture splits it), 14 dilated-liver cases in a tight blob at
    the arc's centre (the heaviest single component), 2 far errors; the decoder segments by region."""
    angle = rng.uniform(0.0, np.pi, 30)
    radius = rng.normal(1.5, 0.04, 30)
    clean = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
    dilated = rng.normal([0.0, 0.0], 0.04, (14, 2))
    errors = np.array([[4.0, -3.0], [-4.0, -3.5]])
    latents = np.concatenate([clean, dilated, errors])
    truth = ["clean"] * 30 + ["dilated"] * 14 + ["error"] * 2

    def decode(z: np.ndarray) -> list[np.ndarray]:
        if z[1] < -2.0:
            return _maps(6, spleen=False)  # the errors' region: spleen not drawn
        return _maps(8 if np.linalg.norm(z) < 0.75 else 6)  # the dilated region: liver about 33% larger

    return latents, np.array(truth), decode


def test_styles_follow_behaviour_and_the_main_mode_is_the_largest_style():
    latents, truth, decode = _map_and_decoder(np.random.default_rng(0))
    mixture = cluster_latents(latents, max_components=8, seed=0)
    # The map this test is about: the mixture's heaviest component is the biased blob, and the
    # clean cloud is split into several components.
    heaviest = np.flatnonzero(mixture.labels == mixture.main_cluster)
    assert set(truth[heaviest]) == {"dilated"}
    assert len(set(mixture.labels[truth == "clean"])) >= 2

    styles, row_maps = find_styles(latents, mixture, decode, [0.001], NAMES, min_style_size=3)
    assert styles.n_styles == 2
    main = styles.main_cluster
    assert set(truth[styles.labels == main]) == {"clean"} and (styles.labels == main).sum() == 30
    assert set(truth[styles.labels == 1]) == {"dilated"}
    isolated = np.flatnonzero(~styles.is_style[styles.labels])
    assert set(truth[isolated]) == {"error"}
    assert styles.consensus and styles.main_share == pytest.approx(30 / 46)
    # Every checked member of a style segments like its centre; the centre's maps are returned.
    assert styles.n_checked[main] == 12 and styles.consistency[main] == 1.0
    assert np.array_equal(row_maps[main][0], decode(styles.centers[main])[0])
    text = describe_main_mode(styles)
    assert text.startswith("style 0 is the consensus: 30 of 46 cases") and "12 of 12 of its members" in text
    assert row_name(styles, main) == "style 0 (main mode)" and row_name(styles, styles.n_clusters - 1).startswith(
        "isolated")


def test_a_style_split_by_a_behavioural_difference_is_never_merged():
    latents, truth, _ = _map_and_decoder(np.random.default_rng(1))
    mixture = cluster_latents(latents, max_components=8, seed=0)

    def decode(z: np.ndarray) -> list[np.ndarray]:  # the arc's right half omits the spleen
        return _maps(6, spleen=bool(z[0] < 0.0 or np.linalg.norm(z) < 0.75))

    assert len(set(mixture.labels[truth == "clean"])) >= 2
    styles, _ = find_styles(latents, mixture, decode, [0.001], NAMES, min_style_size=3)
    for row in range(styles.n_clusters):
        members = latents[(styles.labels == row) & (truth == "clean")]
        sides = {bool(x < 0.0) for x, _ in members if abs(x) > 0.3}  # away from the boundary
        assert len(sides) <= 1, f"row {row} mixes cases with and without a spleen"
    assert styles.n_styles == 2  # the arc's right half; its left half with the blob (alike in this decoder)


def test_no_consensus_is_said_when_no_style_holds_a_clear_majority():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    latents = np.concatenate([rng.normal(c, 0.05, (12, 2)) for c in centres])

    def decode(z: np.ndarray) -> list[np.ndarray]:
        return _maps(4 + 2 * int(np.argmin(np.linalg.norm(centres - z, axis=1))))

    styles, _ = find_styles(latents, cluster_latents(latents, max_components=6, seed=0), decode, [0.001], NAMES,
                            min_style_size=3)
    assert styles.n_styles == 3 and not styles.consensus
    assert describe_main_mode(styles).startswith("no style holds a clear majority")


def test_style_thresholds_are_checked():
    with pytest.raises(ValueError, match="volume"):
        StyleThresholds(volume=0.0)
    with pytest.raises(ValueError, match="max_members"):
        StyleThresholds(max_members=-1)
    with pytest.raises(ValueError, match="linkage must be one of average, complete; found 'single'"):
        StyleThresholds(linkage="single")
    with pytest.raises(ValueError, match="volume_scale must be one of typical, pair; found 'max'"):
        StyleThresholds(volume_scale="max")


def test_style_stability_is_one_when_refits_agree_and_drops_for_the_cases_that_move():
    latents, truth, decode = _map_and_decoder(np.random.default_rng(0))

    def refit(seed: int):
        return find_styles(latents, cluster_latents(latents, max_components=8, seed=seed), decode, [0.001], NAMES,
                           3, StyleThresholds(max_members=0))[0]

    base = refit(0)
    stable = style_stability(latents, base, refit, [1, 2])
    assert stable.shape == (len(latents),) and np.all(stable == 1.0)
    # A refit that moves the first five clean cases into the dilated style.
    moved = dataclasses.replace(base, labels=base.labels.copy())
    moved.labels[:5] = base.labels[truth == "dilated"][0]
    shaken = style_stability(latents, base, lambda seed: moved, [1])
    assert np.all(shaken[:5] < 0.7) and np.all(shaken[5:] > 0.8)
    assert np.isnan(style_stability(latents, base, refit, [])).all()


def test_a_style_the_map_keeps_inside_the_main_mode_is_split_off_by_its_annotations():
    from HyperSORTLib.analysis.styles import split_by_annotations

    # 30 cases in one blob (the map has not moved 6 of them away), 6 spleen-omitting cases elsewhere.
    rng = np.random.default_rng(2)
    latents = np.concatenate([rng.normal([0.0, 0.0], 0.1, (30, 2)), rng.normal([2.0, 0.0], 0.1, (6, 2))])

    def decode(z: np.ndarray) -> list[np.ndarray]:
        return _maps(6) if z[0] < 1.0 else _maps(6, spleen=False)

    styles, _ = find_styles(latents, cluster_latents(latents, max_components=4, min_components=4, seed=0), decode,
                            [0.001], NAMES, min_style_size=3)
    assert styles.n_styles == 2 and styles.sizes[0] == 30
    # Against the main mode's UNet: 6 of its members annotate the liver 25 % larger, 2 the spleen 40 % larger.
    ratios = np.exp(rng.normal(0.0, 0.02, (36, 2)))
    ratios[30:, 1] = 0.0
    ratios[[3, 7, 11, 15, 19, 23], 0] *= 1.25
    ratios[[1, 2], 1] *= 1.4
    split, found, before = split_by_annotations(styles, latents, ratios, np.log(np.maximum(ratios, 1e-9)))
    assert split.n_styles == 3 and split.main_cluster == 0 and split.sizes.tolist() == [24, 6, 6]
    row = next(iter(found))
    assert np.flatnonzero(split.labels == row).tolist() == [3, 7, 11, 15, 19, 23]
    assert found[row][0] == 0 and found[row][1] == pytest.approx(1.25, abs=0.03)
    assert split.components[row] == () and np.isnan(split.consistency[row])
    np.testing.assert_allclose(split.centers[row], latents[[3, 7, 11, 15, 19, 23]].mean(axis=0))
    assert before[row] == -1 and sorted(b for b in before if b >= 0) == list(range(styles.n_clusters))
    assert set(split.labels[[1, 2]]) == {0}  # two members are no style: they stay, named by the annotation check
    assert split.consensus == (24 / 36 >= 0.5)
    # Nothing to split: the styles come back as they were.
    same, none, rows = split_by_annotations(styles, latents, np.ones((36, 2)), None)
    assert same is styles and none == {} and rows == list(range(styles.n_clusters))


def test_a_member_of_another_style_that_annotates_like_the_main_mode_returns_to_it():
    from HyperSORTLib.analysis.styles import split_by_annotations

    # 24 clean cases; a style of 6 whose UNets draw the liver 17 % larger, one of whose cases (index 24) is
    # annotated like the clean cases: its latent drifted there, its annotation did not.
    rng = np.random.default_rng(4)
    latents = np.concatenate([rng.normal([0.0, 0.0], 0.1, (24, 2)), rng.normal([0.0, 2.0], 0.1, (6, 2))])

    def decode(z: np.ndarray) -> list[np.ndarray]:
        return _maps(6) if z[1] < 1.0 else _maps(7)

    styles, _ = find_styles(latents, cluster_latents(latents, max_components=4, min_components=4, seed=0), decode,
                            [0.001], NAMES, min_style_size=3)
    assert styles.n_styles == 2 and set(styles.labels[24:]) == {1}
    ratios = np.exp(rng.normal(0.0, 0.02, (30, 2)))
    ratios[25:, 0] *= 1.3
    moved, found, before = split_by_annotations(styles, latents, ratios, np.log(ratios))
    assert found == {} and moved.sizes.tolist() == [25, 5] and moved.labels[24] == moved.main_cluster
    assert set(moved.labels[25:]) == {1} and before == [0, 1]
    # A style left with fewer cases than a style's size becomes an isolated group (here 4: 3 of 5 stay).
    few = np.concatenate([latents[:24], latents[25:]])
    styles, _ = find_styles(few, cluster_latents(few, max_components=4, min_components=4, seed=0), decode,
                            [0.001], NAMES, min_style_size=4)
    assert styles.n_styles == 2 and styles.sizes.tolist() == [24, 5]
    ratios = np.exp(rng.normal(0.0, 0.02, (29, 2)))
    ratios[26:, 0] *= 1.3
    shrunk, _, _ = split_by_annotations(styles, few, ratios, np.log(ratios))
    assert shrunk.n_styles == 1 and shrunk.sizes.tolist() == [26, 3] and not shrunk.is_style[1]


def test_the_audit_keeps_a_return_even_when_nothing_is_split_off():
    from HyperSORTLib.analysis.audit import ProbeCase, _split_by_annotations

    rng = np.random.default_rng(4)
    latents = np.concatenate([rng.normal([0.0, 0.0], 0.1, (24, 2)), rng.normal([0.0, 2.0], 0.1, (6, 2))])

    def decode(z: np.ndarray) -> list[np.ndarray]:
        return _maps(6) if z[1] < 1.0 else _maps(7)

    styles, row_maps = find_styles(latents, cluster_latents(latents, max_components=4, min_components=4, seed=0),
                                   decode, [0.001], NAMES, min_style_size=3)
    probe = ProbeCase("case_000", np.zeros(SHAPE, np.float32), 0.001, (1.0, 1.0, 1.0))
    probe.label_maps.update({row: maps[0] for row, maps in enumerate(row_maps)})
    ratios = np.exp(rng.normal(0.0, 0.02, (30, 2)))
    ratios[25:, 0] *= 1.3
    moved, found = _split_by_annotations(None, styles, latents, ratios, np.log(ratios), [probe])  # no decoding needed
    assert found == {} and moved.labels[24] == moved.main_cluster and moved.sizes.tolist() == [25, 5]
    assert all(np.array_equal(probe.label_maps[row], row_maps[row][0]) for row in range(moved.n_clusters))
