"""Tests for HyperSORTLib.analysis (latent-space clustering, suspicion scores, plots)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from HyperSORTLib.latentmap import (
    ClusterResult,
    cluster_latents,
    fit_mixture,
    outlier_scores,
    score_clusters,
    score_detection,
    summarize_latent_space,
)
from HyperSORTLib.analysis.plots import plot_latent_map, plot_latent_maps, project_2d
from data_helpers import CENTRES, PNG_SIGNATURE, SIZES, make_layout


# --------------------------------------------------------------------------- clustering
def test_mixture_finds_the_three_clusters():
    latents, groups, is_error = make_layout()
    mixture = fit_mixture(latents)
    assert mixture.n_components >= 3
    result = cluster_latents(latents)
    assert isinstance(result, ClusterResult)
    clean = ~is_error
    assert score_clusters(result.labels[clean], groups[clean])["ari"] > 0.9
    # Centers come back in latent units (not the standardised space of the fit).
    for centre in CENTRES:
        assert np.min(np.linalg.norm(result.centers - centre, axis=1)) < 0.3


def test_mixture_is_scale_robust():
    latents, groups, is_error = make_layout()
    clean = ~is_error
    for factor in (1e-3, 1e3):
        result = cluster_latents(latents * factor)
        assert score_clusters(result.labels[clean], groups[clean])["ari"] > 0.9
        # The returned mixture works on raw latents: its labels match ClusterResult's.
        raw = result.mixture.predict(latents * factor)
        assert np.array_equal(result.component_order[result.labels], raw)


def test_cluster_labels_ordered_by_size():
    latents, _, _ = make_layout()
    result = cluster_latents(latents)
    sizes = np.bincount(result.labels, minlength=result.n_clusters)
    assert np.array_equal(sizes, result.sizes)
    assert list(sizes) == sorted(sizes, reverse=True)
    assert sizes[0] == SIZES[0]
    assert result.main_cluster == 0
    assert result.centers.shape == (result.n_clusters, 2)
    assert result.weights.shape == (result.n_clusters,)
    assert np.isclose(result.weights.sum(), 1.0)
    assert result.labels.dtype.kind == "i"


def test_clustering_is_deterministic_with_seed():
    latents, _, _ = make_layout(extra_dims=2)
    first = cluster_latents(latents, seed=3, max_components=5)
    second = cluster_latents(latents, seed=3, max_components=5)
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.centers, second.centers)
    assert np.array_equal(first.weights, second.weights)
    assert np.array_equal(outlier_scores(latents), outlier_scores(latents))


def test_single_cluster_and_tiny_tables():
    rng = np.random.default_rng(1)
    blob = rng.normal(0.0, 1.0, (80, 3))
    assert fit_mixture(blob, max_components=4).n_components == 1
    # Two rows: only one component is allowed (1 .. n-1).
    assert fit_mixture([[0.0, 0.0], [1.0, 1.0]]).n_components == 1
    # Identical rows must not crash.
    same = cluster_latents(np.ones((5, 2)))
    assert same.n_clusters == 1
    assert np.array_equal(outlier_scores(np.ones((5, 2))), np.zeros(5))


# --------------------------------------------------------------------------- outliers
def test_outlier_scores_rank_scattered_errors_first():
    latents, _, is_error = make_layout()
    # The caveat this score must survive: BIC gives the isolated errors tight components
    # of their own, so the mixture's density calls them *typical*.
    mixture = fit_mixture(latents)
    mixture_suspicion = -mixture.score_samples(latents)
    assert score_detection(mixture_suspicion, is_error)["auroc"] < 0.5

    scores = outlier_scores(latents)
    assert scores.shape == (len(latents),)
    metrics = score_detection(scores, is_error)
    assert metrics["auroc"] == 1.0
    assert metrics["precision_at_k"] == 1.0
    assert metrics["average_precision"] == 1.0
    assert set(np.argsort(-scores)[: is_error.sum()]) == set(np.flatnonzero(is_error))
    # Unit-free: typical samples score about 1, errors far above.
    assert 0.5 < np.median(scores) <= 1.0 + 1e-12
    assert scores[is_error].min() > 5 * scores[~is_error].max()


def test_outlier_scores_survive_a_small_group_of_errors():
    # Two errors close to each other: a 1-NN score would call them dense; k >= 3 does not.
    errors = np.array([[15.0, 15.0], [15.2, 15.1], [-12.0, 10.0], [10.0, -12.0]])
    latents, _, is_error = make_layout(errors=errors)
    assert score_detection(outlier_scores(latents), is_error)["auroc"] == 1.0


def test_outlier_scores_in_higher_dimensions_and_invariances():
    latents, _, is_error = make_layout(extra_dims=6)
    scores = outlier_scores(latents)
    assert score_detection(scores, is_error)["auroc"] == 1.0
    rotation, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(8, 8)))
    moved = 7.5 * latents @ rotation + 3.0
    assert np.allclose(outlier_scores(moved), scores)


def test_outlier_scores_k_validation():
    latents, _, _ = make_layout()
    assert outlier_scores(latents, k=5).shape == (len(latents),)
    with pytest.raises(ValueError, match="k must be"):
        outlier_scores(latents, k=0)
    with pytest.raises(ValueError, match="k must be"):
        outlier_scores(latents, k=len(latents))


# --------------------------------------------------------------------------- metrics
def test_detection_metrics_on_hand_computed_examples():
    perfect = score_detection([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])
    assert perfect == {"auroc": 1.0, "average_precision": 1.0, "precision_at_k": 1.0, "k": 2}
    reversed_ = score_detection([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])
    assert reversed_["auroc"] == 0.0
    assert reversed_["precision_at_k"] == 0.0
    # Ranked: pos, neg, pos, neg. AP = (1/1 + 2/3) / 2 = 5/6.
    # AUROC: pairs (pos > neg) = (0.9>0.8, 0.9>0.6, 0.7>0.6) = 3 of 4.
    mixed = score_detection([0.9, 0.8, 0.7, 0.6], [True, False, True, False])
    assert mixed["average_precision"] == pytest.approx(5 / 6)
    assert mixed["auroc"] == pytest.approx(0.75)
    assert mixed["precision_at_k"] == pytest.approx(0.5)
    assert score_detection([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], k=3)["precision_at_k"] == \
        pytest.approx(2 / 3)


def test_cluster_metrics_on_toy_inputs():
    assert score_clusters([0, 0, 1, 1], ["a", "a", "b", "b"]) == {"ari": 1.0, "nmi": 1.0}
    # Label permutation does not matter.
    assert score_clusters([1, 1, 0, 0], [0, 0, 1, 1])["ari"] == 1.0
    # Independent partition: ARI = -0.5 for this 2x2 crossing.
    assert score_clusters([0, 1, 0, 1], [0, 0, 1, 1])["ari"] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="entries"):
        score_clusters([0, 1], [0, 1, 1])


def test_summary_is_json_serialisable_and_consistent():
    latents, groups, is_error = make_layout()
    summary = summarize_latent_space(latents, groups, is_error, seed=0)
    json.dumps(summary)  # plain types only
    metrics = summary["metrics"]
    assert metrics["auroc"] == 1.0
    assert metrics["precision_at_k"] == 1.0
    assert metrics["ari_clean"] > 0.9
    assert {"ari", "nmi", "nmi_clean", "average_precision", "k"} <= set(metrics)
    assert len(summary["labels"]) == len(latents)
    assert set(summary["ranking"][:4]) == set(np.flatnonzero(is_error).tolist())
    # No ground truth: only clusters and scores.
    bare = summarize_latent_space(latents, max_components=3)
    assert bare["metrics"] == {}
    # Clean control run (no errors): detection metrics are undefined -> None, no crash.
    control = summarize_latent_space(latents, is_error=np.zeros(len(latents), bool),
                                     max_components=3)
    assert control["metrics"]["auroc"] is None
    json.dumps(control)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("latents", "message"),
    [
        (np.arange(5.0), "2-D"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), "finite"),
        (np.array([[0.0, 1.0]]), "at least 2 rows"),
        (np.zeros((3, 2, 2)), "2-D"),
        ([["a", "b"], ["c", "d"]], "numeric"),
    ],
)
def test_bad_latent_tables_raise(latents, message):
    for function in (fit_mixture, cluster_latents, outlier_scores, summarize_latent_space):
        with pytest.raises(ValueError, match=message):
            function(latents)


def test_bad_arguments_raise():
    latents, _, _ = make_layout()
    with pytest.raises(ValueError, match="max_components"):
        fit_mixture(latents, max_components=0)
    with pytest.raises(ValueError, match="covariance_type"):
        fit_mixture(latents, covariance_type="banana")
    with pytest.raises(ValueError, match="no positives"):
        score_detection([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match="no negatives"):
        score_detection([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="entries"):
        score_detection([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="finite"):
        score_detection([0.1, np.nan, 0.3], [0, 1, 0])
    with pytest.raises(ValueError, match="0/1"):
        score_detection([0.1, 0.2, 0.3], [0, 2, 1])
    with pytest.raises(ValueError, match="k must be"):
        score_detection([0.1, 0.2, 0.3], [0, 1, 0], k=4)
    with pytest.raises(ValueError, match="true_groups"):
        summarize_latent_space(latents, true_groups=[0, 1])


# --------------------------------------------------------------------------- plots
def _read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return matplotlib.image.imread(path)


def test_plot_latent_map_writes_png(tmp_path):
    latents, groups, is_error = make_layout()
    names = [f"case_{i:03d}" for i in range(len(latents))]
    scores = outlier_scores(latents)
    top = [names[i] for i in np.argsort(-scores)[:4]]
    target = tmp_path / "nested" / "map.png"
    returned = plot_latent_map(latents, target, colour_by=np.array(["A", "B", "C"])[groups],
                               labels=names, annotate=top, title="groups")
    assert returned == target
    image = _read_png(target)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 300 and image.shape[1] > 300
    # Written atomically: no temporary files are left behind.
    assert sorted(p.name for p in target.parent.iterdir()) == ["map.png"]

    scored = plot_latent_map(latents, tmp_path / "score.png", score=scores, annotate=[0])
    assert _read_png(scored).shape[0] > 300


def test_plot_latent_map_handles_three_dimensions(tmp_path):
    latents, groups, _ = make_layout(extra_dims=1)
    assert latents.shape[1] == 3
    xy, axis_labels = project_2d(latents)
    assert xy.shape == (len(latents), 2)
    assert axis_labels[0].startswith("PC1") and axis_labels[1].startswith("PC2")
    assert project_2d(latents[:, :2])[1] == ("z1", "z2")
    path = plot_latent_map(latents, tmp_path / "map3d.png", colour_by=groups)
    assert _read_png(path).shape[0] > 300


def test_plot_latent_maps_two_panels(tmp_path):
    latents, groups, _ = make_layout()
    scores = outlier_scores(latents)
    path = plot_latent_maps(latents, tmp_path / "maps.png", groups, scores,
                            annotate=list(np.argsort(-scores)[:3]), title="demo")
    image = _read_png(path)
    assert image.shape[1] > image.shape[0]  # side by side


def test_plot_bad_input_raises(tmp_path):
    latents, groups, _ = make_layout()
    with pytest.raises(ValueError, match="colour_by"):
        plot_latent_map(latents, tmp_path / "x.png", colour_by=groups[:-1])
    with pytest.raises(ValueError, match="either colour_by or score"):
        plot_latent_map(latents, tmp_path / "x.png", colour_by=groups, score=groups)
    with pytest.raises(ValueError, match="annotate"):
        plot_latent_map(latents, tmp_path / "x.png", annotate=["nope"])
    with pytest.raises(ValueError, match="2-D"):
        plot_latent_map(np.arange(4.0), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
