"""Per-sample suspicion signals over the latent table, and their combination into one ranking.

Each signal is a number per training sample. Density signals are *higher = more typical*; every
other signal, and the combined ``suspicion``, is *higher = more suspicious*. The signals:

* :func:`mixture_log_density`: log density under the Gaussian mixture's **large** components
  (see :func:`large_clusters`), with the weights renormalised over them;
* :func:`kde_log_density`: leave-one-out log density under a Gaussian kernel density estimate
  whose bandwidth is chosen by least-squares cross-validation (:func:`select_kde_bandwidth`);
* :func:`mode_distances`: Euclidean distance to the centre of the nearest large component;
* the k-nearest-neighbour score of :func:`HyperSORTLib.latentmap.clusters.outlier_scores`;
* the loss signals computed from the data (own training loss, loss under the main mode's UNet).

:func:`combine_signals` turns them into one suspicion score: the mean, over the available
signals, of each sample's normalised rank (0 = least, 1 = most suspicious).

Why these choices survive the BIC caveat (METHOD.md section 4): a BIC-selected mixture may give
a few isolated samples a tight component of their own, which makes them look dense under the
full mixture. Components holding fewer than ``min_cluster_size`` samples are therefore left out
of the mixture density and are not "modes" for the distance; the kernel density is evaluated
leave-one-out, so an isolated sample gets no density from itself, and its bandwidth is chosen by
a criterion that isolated samples do not inflate; and the k-NN score needs
``k`` other samples nearby. Averaging ranks rather than raw values keeps one signal's scale (a
log density of -300 for a far outlier) from swamping the others.

Only numpy, scipy and scikit-learn are needed; no torch.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy.spatial.distance import cdist, pdist
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, rankdata

from HyperSORTLib.latentmap.clusters import ClusterResult, as_error_mask, as_latent_table, score_detection

__all__ = [
    "HIGHER_IS_SUSPICIOUS",
    "SIGNALS",
    "combine_signals",
    "default_min_cluster_size",
    "detection_by_signal",
    "kde_log_density",
    "large_clusters",
    "mixture_log_density",
    "mode_distances",
    "normalised_ranks",
    "select_kde_bandwidth",
]

#: Per-sample signals of an audit, in the column order of its ``samples.csv``.
SIGNALS = ("density_gmm", "density_kde", "own_loss", "main_mode_loss", "mode_distance", "knn_score")
#: Orientation of each signal (densities are high for typical samples).
HIGHER_IS_SUSPICIOUS = {"density_gmm": False, "density_kde": False, "own_loss": True, "main_mode_loss": True,
                        "mode_distance": True, "knn_score": True}

#: Rows of the pairwise-distance matrix computed at once (bounds memory to ~8 MB per block
#: per thousand samples).
_CHUNK = 1024


# --------------------------------------------------------------------------- large components
def default_min_cluster_size(n_samples: int) -> int:
    """Smallest cluster counted as a mode: ``max(3, ceil(2% of the samples))``."""
    return max(3, math.ceil(0.02 * int(n_samples)))


def large_clusters(clusters: ClusterResult, min_cluster_size: int | None = None) -> np.ndarray:
    """Boolean mask ``[n_clusters]`` of the clusters holding at least ``min_cluster_size`` samples.

    When no cluster is that large (a very small table), the largest cluster(s) alone count.

    Args:
        clusters: Result of :func:`~HyperSORTLib.latentmap.clusters.cluster_latents`.
        min_cluster_size: Smallest size of a mode; default :func:`default_min_cluster_size`.

    Example:
        >>> from HyperSORTLib.latentmap import cluster_latents
        >>> rng = np.random.default_rng(0)
        >>> z = np.concatenate([rng.normal(0, 0.1, (40, 2)), [[9.0, 9.0]]])
        >>> large_clusters(cluster_latents(z)).tolist()
        [True, False]
    """
    sizes = np.asarray(clusters.sizes)
    if min_cluster_size is None:
        min_cluster_size = default_min_cluster_size(int(sizes.sum()))
    if isinstance(min_cluster_size, bool) or not isinstance(min_cluster_size, (int, np.integer)) \
            or min_cluster_size < 1:
        raise ValueError(f"min_cluster_size must be an integer >= 1; found {min_cluster_size!r}")
    large = sizes >= int(min_cluster_size)
    return large if large.any() else sizes == sizes.max()


def _component_covariance(mixture: Any, component: int) -> np.ndarray:
    dim = mixture.means_.shape[1]
    kind = mixture.covariance_type
    if kind == "full":
        return mixture.covariances_[component]
    if kind == "tied":
        return mixture.covariances_
    if kind == "diag":
        return np.diag(mixture.covariances_[component])
    return np.eye(dim) * mixture.covariances_[component]  # spherical


def mixture_log_density(latents: Any, clusters: ClusterResult, large: np.ndarray | None = None) -> np.ndarray:
    """Log density of each latent under the mixture restricted to its large components.

    The mixture weights of the kept components are renormalised to sum to one, so this is a
    proper density. Tight components that BIC grants to a few isolated samples are dropped, so
    those samples are scored by their distance to the real modes instead of looking dense.

    Args:
        latents: Latent table ``[n_samples, latent_dim]`` (latent units, as the mixture).
        clusters: The clustering whose mixture is evaluated.
        large: Mask ``[n_clusters]`` (label order) of the components to keep; default
            :func:`large_clusters`.

    Returns:
        ``float64`` array ``[n_samples]`` (higher = more typical).
    """
    table = as_latent_table(latents, min_rows=1)
    keep = large_clusters(clusters) if large is None else np.asarray(large, dtype=bool)
    if keep.shape != (clusters.n_clusters,) or not keep.any():
        raise ValueError(f"large must be a boolean mask with one entry per cluster ({clusters.n_clusters}) "
                         f"and at least one True; found {keep.tolist()}")
    mixture = clusters.mixture
    components = np.asarray(clusters.component_order)[keep]
    weights = np.asarray(mixture.weights_, dtype=np.float64)[components]
    weights = weights / weights.sum()
    per_component = np.stack([
        multivariate_normal.logpdf(table, mean=mixture.means_[c], cov=_component_covariance(mixture, c),
                                   allow_singular=True).reshape(-1)
        for c in components], axis=1)
    return logsumexp(per_component + np.log(weights)[None, :], axis=1)


def mode_distances(latents: Any, centers: Any) -> np.ndarray:
    """Euclidean distance (latent units) from each latent to the nearest of ``centers``.

    Example:
        >>> mode_distances([[0.0, 0.0], [3.0, 4.0]], [[0.0, 0.0]]).tolist()
        [0.0, 5.0]
    """
    table = as_latent_table(latents, min_rows=1)
    modes = as_latent_table(centers, "centers", min_rows=1)
    if modes.shape[1] != table.shape[1]:
        raise ValueError(f"centers have {modes.shape[1]} dimensions but the latents have {table.shape[1]}")
    return cdist(table, modes).min(axis=1)


# --------------------------------------------------------------------------- kernel density
def _loo_log_density(table: np.ndarray, bandwidth: float) -> np.ndarray:
    """Leave-one-out Gaussian-KDE log density of every row of ``table``."""
    n, dim = table.shape
    out = np.empty(n)
    for start in range(0, n, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, n))
        sq = cdist(table[rows], table, "sqeuclidean")
        sq[np.arange(rows.size), rows] = np.inf  # leave the sample itself out
        out[rows] = logsumexp(-sq / (2.0 * bandwidth * bandwidth), axis=1)
    return out - np.log(n - 1) - 0.5 * dim * np.log(2.0 * np.pi * bandwidth**2)


def _lscv_scores(table: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Least-squares cross-validation criterion of an isotropic Gaussian KDE per bandwidth.

    ``LSCV(h) = integral of f_h^2 - 2/n * sum_i f_{h,-i}(x_i)``, which for Gaussian kernels is
    ``1/n^2 sum_ij phi_{sqrt(2) h}(x_i - x_j) - 2/(n(n-1)) sum_{i != j} phi_h(x_i - x_j)``.
    """
    n, dim = table.shape
    sq = pdist(table, "sqeuclidean")
    out = np.empty(bandwidths.size)
    for b, h in enumerate(bandwidths):
        var = h * h
        overlap = (4.0 * np.pi * var) ** (-0.5 * dim) * (n + 2.0 * np.exp(-sq / (4.0 * var)).sum()) / n**2
        loo = (2.0 * np.pi * var) ** (-0.5 * dim) * 2.0 * np.exp(-sq / (2.0 * var)).sum() / (n * (n - 1))
        out[b] = overlap - 2.0 * loo
    return out


def select_kde_bandwidth(latents: Any, n_grid: int = 48, max_rows: int = 3000, seed: int = 0) -> float:
    """Kernel bandwidth (latent units) chosen by least-squares cross-validation.

    The bandwidth minimises the least-squares cross-validation criterion (the integrated
    squared error of the estimate, up to a constant) over a log-spaced grid from 1/30 to 3 times
    Scott's rule of thumb (``sigma * n ** (-1 / (d + 4))``, ``sigma`` the root-mean-square
    per-dimension standard deviation). Why this criterion:

    * Scott's and Silverman's rules take the bandwidth from the global spread, which with several
      separated clusters is dominated by the distances between clusters, so they over-smooth.
    * Likelihood cross-validation is dragged towards large bandwidths by outliers (an isolated
      sample's leave-one-out likelihood is ``exp(-d^2 / 2h^2)``), i.e. by exactly the samples
      the density is meant to expose. An isolated sample adds almost nothing to the
      least-squares criterion, so it does not move the bandwidth.

    The kernel is isotropic because latent dimensions share units. Tables over ``max_rows`` rows
    are subsampled (seeded) for the selection.

    Returns:
        The bandwidth; 1.0 when all latents are identical.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z = np.concatenate([rng.normal(0, 0.1, (50, 2)), rng.normal(10, 0.1, (50, 2))])
        >>> 0.02 < select_kde_bandwidth(z) < 0.3
        True
    """
    table = as_latent_table(latents, min_rows=3)
    n, dim = table.shape
    sigma = float(np.sqrt(np.mean(table.var(axis=0))))
    if not np.isfinite(sigma) or sigma <= 0.0:
        return 1.0
    scott = sigma * n ** (-1.0 / (dim + 4))
    grid = scott * np.geomspace(1.0 / 30.0, 3.0, int(n_grid))
    if n > max_rows:
        table = table[np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))]
    return float(grid[int(np.argmin(_lscv_scores(table, grid)))])


def kde_log_density(latents: Any, bandwidth: float | None = None) -> tuple[np.ndarray, float]:
    """Leave-one-out log density of each latent under a Gaussian kernel density estimate.

    Sample ``i`` is scored by the kernels of the *other* samples, so an isolated sample gets no
    density from its own kernel, whatever the bandwidth.

    Args:
        latents: Latent table ``[n_samples, latent_dim]``, at least 3 rows.
        bandwidth: Kernel standard deviation in latent units; default
            :func:`select_kde_bandwidth`.

    Returns:
        ``(log_density [n_samples], bandwidth)``; higher = more typical.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z = np.concatenate([rng.normal(0, 0.1, (50, 2)), [[5.0, 5.0]]])
        >>> int(np.argmin(kde_log_density(z)[0]))
        50
    """
    table = as_latent_table(latents, min_rows=3)
    if bandwidth is None:
        bandwidth = select_kde_bandwidth(table)
    if not np.isfinite(bandwidth) or bandwidth <= 0:
        raise ValueError(f"bandwidth must be a positive number; found {bandwidth!r}")
    # logsumexp works in log space, so far outliers get very negative but finite values.
    values = _loo_log_density(table, float(bandwidth))
    return values, float(bandwidth)


# --------------------------------------------------------------------------- combination
def normalised_ranks(values: Any) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties share their average rank); NaN stays NaN.

    Example:
        >>> normalised_ranks([3.0, 1.0, 2.0, float("nan")]).tolist()
        [1.0, 0.0, 0.5, nan]
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"values must be 1-D; found shape {array.shape}")
    out = np.full(array.shape, np.nan)
    finite = np.isfinite(array)
    count = int(finite.sum())
    if count == 1:
        out[finite] = 0.5
    elif count > 1:
        out[finite] = (rankdata(array[finite], method="average") - 1.0) / (count - 1.0)
    return out


def combine_signals(signals: Mapping[str, Any], higher_is_suspicious: Mapping[str, bool]) -> np.ndarray:
    """Combined suspicion: the mean normalised rank of each sample over the given signals.

    Each signal is oriented so that higher means more suspicious (densities are negated), turned
    into normalised ranks (:func:`normalised_ranks`) and averaged per sample over the signals
    that are finite for it. Ranks make the signals commensurable without assuming their
    distributions; a sample that every signal puts last scores 1, one every signal puts first 0.

    Args:
        signals: ``name -> values [n_samples]``; NaN marks a missing value.
        higher_is_suspicious: ``name -> bool`` for every signal.

    Returns:
        ``float64`` array ``[n_samples]`` in [0, 1]; NaN where no signal is finite.

    Example:
        >>> combine_signals({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, -1.0]},
        ...                 {"a": True, "b": False}).tolist()
        [0.25, 0.25, 1.0]
    """
    if not signals:
        raise ValueError("combine_signals needs at least one signal")
    lengths = {name: np.asarray(v).shape for name, v in signals.items()}
    if len(set(lengths.values())) != 1 or len(next(iter(lengths.values()))) != 1:
        raise ValueError(f"every signal must be 1-D with one value per sample; found shapes {lengths}")
    missing = [name for name in signals if name not in higher_is_suspicious]
    if missing:
        raise ValueError(f"higher_is_suspicious lacks the orientation of {missing}")
    ranks = np.stack([
        normalised_ranks(np.asarray(values, dtype=np.float64) * (1.0 if higher_is_suspicious[name] else -1.0))
        for name, values in signals.items()])
    counts = np.isfinite(ranks).sum(axis=0)
    totals = np.nansum(ranks, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def detection_by_signal(signals: Mapping[str, Any], higher_is_suspicious: Mapping[str, bool],
                        is_error: Any, k: int | None = None) -> dict[str, dict[str, Any] | None]:
    """AUROC, average precision and precision@k of every signal against known errors.

    Each signal is oriented like :func:`combine_signals` and evaluated over the samples where
    it is finite (``n`` in its entry). A signal with no finite value, or whose evaluated
    samples hold no error or only errors, maps to ``None``.

    Args:
        signals: ``name -> values [n_samples]``.
        higher_is_suspicious: ``name -> bool`` for every signal.
        is_error: Boolean (or 0/1) per sample.
        k: Cut-off of ``precision_at_k``; default the number of errors among the samples used.

    Returns:
        ``name -> {"auroc", "average_precision", "precision_at_k", "k", "n"}`` or ``None``.
    """
    truth = as_error_mask(is_error)
    out: dict[str, dict[str, Any] | None] = {}
    for name, values in signals.items():
        array = np.asarray(values, dtype=np.float64)
        if array.shape != truth.shape:
            raise ValueError(f"signal {name!r} has shape {array.shape} but is_error has {truth.shape}")
        finite = np.isfinite(array)
        used = truth[finite]
        if not used.any() or used.all():
            out[name] = None
            continue
        oriented = array[finite] * (1.0 if higher_is_suspicious[name] else -1.0)
        cut = None if k is None else min(int(k), int(finite.sum()))
        out[name] = {**score_detection(oriented, used, k=cut), "n": int(finite.sum())}
    return out
