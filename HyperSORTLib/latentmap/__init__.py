"""The latent table as a map of the dataset: clusters, densities and per-sample suspicion scores.

Pure numerical tools over a latent table ``[n_samples, latent_dim]`` (numpy, scipy,
scikit-learn; no torch): :mod:`~HyperSORTLib.latentmap.clusters` fits the Gaussian mixture and
scores clusters and detection against a known truth; :mod:`~HyperSORTLib.latentmap.scores`
computes the suspicion signals and combines them into one ranking. Inference (choosing the
latent of a cluster) and the audit (:mod:`HyperSORTLib.analysis`) build on it.
"""

from __future__ import annotations

from HyperSORTLib.latentmap.clusters import (
    ClusterResult,
    cluster_latents,
    fit_mixture,
    outlier_scores,
    score_clusters,
    score_detection,
    summarize_latent_space,
)
from HyperSORTLib.latentmap.scores import (
    HIGHER_IS_SUSPICIOUS,
    SIGNALS,
    combine_signals,
    detection_by_signal,
    kde_log_density,
    large_clusters,
    mixture_log_density,
    mode_distances,
    select_kde_bandwidth,
)

__all__ = [
    "ClusterResult",
    "HIGHER_IS_SUSPICIOUS",
    "SIGNALS",
    "cluster_latents",
    "combine_signals",
    "detection_by_signal",
    "fit_mixture",
    "kde_log_density",
    "large_clusters",
    "mixture_log_density",
    "mode_distances",
    "outlier_scores",
    "score_clusters",
    "score_detection",
    "select_kde_bandwidth",
    "summarize_latent_space",
]
