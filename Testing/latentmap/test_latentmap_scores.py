"""Per-sample suspicion signals, their combination, cluster behaviour in words, report plots."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from HyperSORTLib.latentmap import cluster_latents, fit_mixture, score_detection
from HyperSORTLib.analysis.behaviour import BehaviourThresholds, compare_to_reference
from HyperSORTLib.analysis.plots import _axial_slice, best_axial_slice, plot_cluster_map, plot_probe_overlays
from HyperSORTLib.latentmap.scores import (
    combine_signals,
    detection_by_signal,
    kde_log_density,
    large_clusters,
    mixture_log_density,
    mode_distances,
    normalised_ranks,
    select_kde_bandwidth,
)
from data_helpers import PNG_SIGNATURE, make_layout


# --------------------------------------------------------------------------- combination and metrics
def test_normalised_ranks_and_combination_by_hand():
    assert normalised_ranks([3.0, 1.0, 2.0, 2.0]).tolist() == [1.0, 0.0, 0.5, 0.5]
    ranks = normalised_ranks([np.nan, 5.0, 7.0])
    assert np.isnan(ranks[0]) and ranks[1:].tolist() == [0.0, 1.0]
    # a: ranks 0, .5, 1; b (a density, negated): 0.5, 0, 1 -> means .25, .25, 1.
    combined = combine_signals({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, -1.0]}, {"a": True, "b": False})
    assert combined.tolist() == [0.25, 0.25, 1.0]
    # A missing value is skipped for that sample only.
    combined = combine_signals({"a": [1.0, 2.0, 3.0], "b": [np.nan, 1.0, 0.0]}, {"a": True, "b": True})
    assert combined.tolist() == [0.0, 0.75, 0.5]
    with pytest.raises(ValueError, match="orientation"):
        combine_signals({"a": [1.0, 2.0]}, {})
    with pytest.raises(ValueError, match="one value per sample"):
        combine_signals({"a": [1.0, 2.0], "b": [1.0]}, {"a": True, "b": True})


def test_detection_by_signal_on_a_hand_computed_ranking():
    truth = [1, 0, 1, 0]
    # Ranking 1st..4th = error, clean, error, clean: AUROC 3/4, AP (1 + 2/3) / 2, precision@2 = 1/2.
    out = detection_by_signal({"loss": [0.9, 0.8, 0.7, 0.6], "density": [-0.9, -0.8, -0.7, -0.6],
                               "partial": [np.nan, 0.1, 0.9, 0.2], "empty": [np.nan] * 4},
                              {"loss": True, "density": False, "partial": True, "empty": True}, truth)
    assert out["loss"]["auroc"] == pytest.approx(0.75)
    assert out["loss"]["average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert out["loss"]["precision_at_k"] == 0.5 and out["loss"]["k"] == 2 and out["loss"]["n"] == 4
    # A density is suspicious when low: -0.9 is the lowest, so the ranking is the same as "loss".
    assert out["density"] == out["loss"]
    reversed_ = detection_by_signal({"density": [0.9, 0.8, 0.7, 0.6]}, {"density": False}, truth)["density"]
    assert reversed_["auroc"] == pytest.approx(0.25) and reversed_["precision_at_k"] == 0.5
    # Evaluated on the 3 finite samples: [clean .1, error .9, clean .2] -> a perfect ranking.
    assert out["partial"] == {"auroc": 1.0, "average_precision": 1.0, "precision_at_k": 1.0, "k": 1, "n": 3}
    assert out["empty"] is None


# --------------------------------------------------------------------------- latent signals
def test_kde_leave_one_out_density_by_hand():
    z = np.array([[0.0], [1.0], [3.0]])
    values, bandwidth = kde_log_density(z, bandwidth=1.0)
    assert bandwidth == 1.0
    expected = [np.log((norm.pdf(1) + norm.pdf(3)) / 2), np.log((norm.pdf(1) + norm.pdf(2)) / 2),
                np.log((norm.pdf(3) + norm.pdf(2)) / 2)]
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="bandwidth"):
        kde_log_density(z, bandwidth=0.0)


def test_kde_bandwidth_is_not_inflated_by_scattered_errors():
    latents, _, is_error = make_layout()
    with_errors, clean_only = select_kde_bandwidth(latents), select_kde_bandwidth(latents[~is_error])
    # Same grid point or a neighbour (grids differ slightly through Scott's factor).
    assert with_errors == pytest.approx(clean_only, rel=0.15)
    assert with_errors < 0.4 * 2  # the within-cluster spread is 0.4; Scott's rule gives about 1.4
    density, _ = kde_log_density(latents)
    assert score_detection(-density, is_error)["auroc"] == 1.0
    assert select_kde_bandwidth(np.ones((5, 2))) == 1.0


def test_large_component_density_survives_the_bic_caveat():
    latents, _, is_error = make_layout()
    clusters = cluster_latents(latents)
    # The caveat: isolated errors get tight components, so the full mixture calls them dense.
    assert score_detection(-fit_mixture(latents).score_samples(latents), is_error)["auroc"] < 0.5
    large = large_clusters(clusters)
    assert large.tolist() == [True, True, True] + [False] * (clusters.n_clusters - 3)
    density = mixture_log_density(latents, clusters, large)
    assert score_detection(-density, is_error)["auroc"] == 1.0
    distance = mode_distances(latents, clusters.centers[large])
    assert score_detection(distance, is_error)["auroc"] == 1.0
    # Restricted to all components, the density is the mixture's own.
    everything = np.ones(clusters.n_clusters, dtype=bool)
    np.testing.assert_allclose(mixture_log_density(latents, clusters, everything),
                               clusters.mixture.score_samples(latents), rtol=1e-9, atol=1e-9)


def test_combined_latent_signals_rank_scattered_errors_first():
    from HyperSORTLib.latentmap import outlier_scores

    latents, _, is_error = make_layout(extra_dims=1)
    clusters = cluster_latents(latents)
    large = large_clusters(clusters)
    signals = {"density_gmm": mixture_log_density(latents, clusters, large),
               "density_kde": kde_log_density(latents)[0],
               "mode_distance": mode_distances(latents, clusters.centers[large]),
               "knn_score": outlier_scores(latents)}
    orientation = {"density_gmm": False, "density_kde": False, "mode_distance": True, "knn_score": True}
    combined = combine_signals(signals, orientation)
    assert score_detection(combined, is_error) == {"auroc": 1.0, "average_precision": 1.0, "precision_at_k": 1.0,
                                                   "k": 4}
    assert combined[is_error].min() > 0.95


def test_large_clusters_threshold_and_fallback():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 0.1, (40, 2)), rng.normal(6, 0.1, (4, 2)), [[20.0, -20.0]]])
    clusters = cluster_latents(z)
    assert clusters.sizes.tolist() == [40, 4, 1]
    assert large_clusters(clusters).tolist() == [True, True, False]
    assert large_clusters(clusters, min_cluster_size=5).tolist() == [True, False, False]
    assert large_clusters(clusters, min_cluster_size=100).tolist() == [True, False, False]  # largest only
    with pytest.raises(ValueError, match="min_cluster_size"):
        large_clusters(clusters, min_cluster_size=0)
    assert mode_distances([[0.0, 0.0], [3.0, 4.0]], [[0.0, 0.0], [3.0, 5.0]]).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="dimensions"):
        mode_distances([[0.0, 0.0]], [[0.0, 0.0, 0.0]])


# --------------------------------------------------------------------------- behaviour in words
NAMES = ("background", "liver", "spleen", "right_kidney", "left_kidney")


def _reference() -> np.ndarray:
    ref = np.zeros((20, 20, 10), np.uint8)
    ref[2:10, 2:10, 2:7] = 1  # liver: 320 voxels
    ref[12:16, 2:6, 2:7] = 2  # spleen: 80
    ref[2:5, 14:18, 2:7] = 3  # right kidney: 60
    ref[14:17, 14:18, 2:7] = 4  # left kidney: 60
    return ref


def test_behaviour_volumes_dice_and_words():
    ref = _reference()
    other = ref.copy()
    other[10:12, 2:10, 2:7] = 1  # liver grows by 80 voxels: +25%
    other[other == 2] = 0  # spleen omitted
    voxel_ml = 0.008  # 2 mm isotropic
    behaviour = compare_to_reference([ref, ref], [other, other], [voxel_ml, voxel_ml], NAMES)
    liver, spleen, right, left = behaviour.classes
    assert liver.volume_ml == pytest.approx(400 * voxel_ml) and liver.reference_volume_ml == pytest.approx(2.56)
    assert liver.volume_change == pytest.approx(0.25)
    assert liver.dice == pytest.approx(2 * 320 / (320 + 400))
    assert spleen.missing and spleen.volume_ml == 0.0 and spleen.dice == 0.0
    assert right.dice == 1.0 and right.volume_change == 0.0
    assert behaviour.description == "spleen missing; liver about 25% larger than the main mode"
    assert behaviour.n_probes == 2


def test_behaviour_detects_swaps_relabels_and_new_classes():
    ref = _reference()
    swapped = ref.copy()
    swapped[ref == 3], swapped[ref == 4] = 4, 3
    assert (compare_to_reference([ref], [swapped], [0.008], NAMES).description
            == "right kidney and left kidney swapped")
    merged = ref.copy()
    merged[ref == 2] = 1  # spleen annotated as liver
    assert (compare_to_reference([ref], [merged], [0.008], NAMES).description
            == "spleen labelled as liver; liver about 25% larger than the main mode")
    # Volume changes are named largest first; "than the main mode" once.
    sizes = ref.copy()
    sizes[ref == 1] = 0
    sizes[4:8, 4:8, 2:7] = 1  # liver: 80 of 320 voxels left, -75%
    sizes[16, 2:6, 2:7] = 2  # spleen: +20 voxels, +25%
    assert (compare_to_reference([ref], [sizes], [0.008], NAMES).description
            == "liver about 75% smaller than the main mode; spleen about 25% larger")
    extra = ref.copy()
    extra[ref == 2] = 0
    added = compare_to_reference([extra], [ref], [0.008], NAMES)
    assert added.classes[1].appears and "spleen appears (0.6 ml per case)" in added.description
    same = compare_to_reference([ref], [ref], [0.008], NAMES, BehaviourThresholds(volume=0.1))
    assert same.description.startswith("segments like the main mode (every class within 10% volume")
    shifted = np.roll(ref, 3, axis=0)
    assert "drawn differently (Dice" in compare_to_reference([ref], [shifted], [0.008], NAMES).description


def test_behaviour_bad_input():
    ref = _reference()
    with pytest.raises(ValueError, match="one voxel volume per probe"):
        compare_to_reference([ref], [ref], [0.008, 0.008], NAMES)
    with pytest.raises(ValueError, match="differ in shape"):
        compare_to_reference([ref], [ref[:-1]], [0.008], NAMES)
    with pytest.raises(ValueError, match="outside 0..2"):
        compare_to_reference([ref], [ref], [0.008], NAMES[:3])
    with pytest.raises(ValueError, match="integer"):
        compare_to_reference([ref.astype(float)], [ref], [0.008], NAMES)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BehaviourThresholds(volume=2.0)


# --------------------------------------------------------------------------- report figures
def test_axial_slice_is_radiological():
    volume = np.zeros((4, 3, 2))
    volume[3, 2, 1] = 1.0  # RAS: most right, most anterior
    view = _axial_slice(volume, 1)
    assert view.shape == (3, 4)
    assert view[0, 0] == 1.0  # top-left of the picture: anterior and the patient's right
    labels = np.zeros((4, 4, 5), np.uint8)
    labels[:, :, 3] = 1
    assert best_axial_slice([labels]) == 3 and best_axial_slice([np.zeros((2, 2, 5))]) == 2


def test_cluster_map_and_probe_overlays_write_pngs(tmp_path):
    latents, _, _ = make_layout(extra_dims=1)
    clusters = cluster_latents(latents)
    path = plot_cluster_map(latents, tmp_path / "clusters.png", clusters.labels, clusters.centers, 0,
                            title="clusters", labels=[f"c{i}" for i in range(len(latents))], annotate=["c0"])
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="cluster labels"):
        plot_cluster_map(latents, tmp_path / "x.png", clusters.labels + 10, clusters.centers)
    k = clusters.n_clusters
    named = plot_cluster_map(latents, tmp_path / "styles.png", clusters.labels, clusters.centers, 0,
                             names=[f"style {c}" for c in range(k)], muted=[c > 0 for c in range(k)])
    assert named.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="one flag per cluster"):
        plot_cluster_map(latents, tmp_path / "x.png", clusters.labels, clusters.centers, muted=[True])
    with pytest.raises(ValueError, match="one name per cluster"):
        plot_cluster_map(latents, tmp_path / "x.png", clusters.labels, clusters.centers, names=["a"])
    ref = _reference()
    image = np.random.default_rng(0).random(ref.shape)
    out = plot_probe_overlays([image, image], [[ref, ref], [ref, np.roll(ref, 2, 0)]], tmp_path / "probes.png",
                              NAMES, ["cluster 0", "cluster 1"], ["a", "b"], spacings=[(2, 2, 3), (1, 1, 1)])
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="one per probe"):
        plot_probe_overlays([image, image], [[ref]], tmp_path / "x.png", NAMES, ["r"], ["a", "b"])
    assert not (tmp_path / "x.png").exists()
