"""Analysis of the learned latent table: clusters, suspicion scores, metrics, plots.

The numerical tools (numpy + scikit-learn) are imported eagerly; the plotting helpers
are loaded on first use so that importing this package does not pull in matplotlib.

Example:
    >>> from HyperSORTLib.analysis import outlier_scores, cluster_latents  # doctest: +SKIP
    >>> scores = outlier_scores(latents)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from HyperSORTLib.analysis.latent_space import (
    ClusterResult,
    cluster_latents,
    fit_mixture,
    outlier_scores,
    score_clusters,
    score_detection,
    summarize_latent_space,
)

_PLOT_NAMES = ("plot_latent_map", "plot_latent_maps", "project_2d")

__all__ = [
    "ClusterResult",
    "cluster_latents",
    "fit_mixture",
    "outlier_scores",
    "score_clusters",
    "score_detection",
    "summarize_latent_space",
    *_PLOT_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _PLOT_NAMES:
        from HyperSORTLib.analysis import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
