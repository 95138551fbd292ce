"""Reading the learned latent table as a map of the dataset.

HyperSORT learns one latent vector per training sample. Samples annotated in a
consistent style end up in clusters; erroneous samples end up in low-density regions.
This module turns a latent table ``[n_samples, latent_dim]`` into

* clusters (a Gaussian mixture whose size is chosen by BIC), see :func:`cluster_latents`;
* a per-sample suspicion score (higher = more likely an error), see
  :func:`outlier_scores`;
* evaluation metrics against ground truth when it is known (synthetic perturbations),
  see :func:`score_clusters`, :func:`score_detection` and
  :func:`summarize_latent_space`.

Only numpy and scikit-learn are needed; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import (
    adjusted_rand_score,
    average_precision_score,
    normalized_mutual_info_score,
    roc_auc_score,
)
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

__all__ = [
    "ClusterResult",
    "cluster_latents",
    "fit_mixture",
    "outlier_scores",
    "score_clusters",
    "score_detection",
    "summarize_latent_space",
]

_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


# --------------------------------------------------------------------------- validation
def as_latent_table(latents: Any, name: str = "latents", min_rows: int = 2) -> np.ndarray:
    """Return ``latents`` as a finite float64 ``[n, d]`` array or raise ``ValueError``."""
    try:
        table = np.asarray(latents, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric 2-D array; could not convert: {exc}") from exc
    if table.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array [n_samples, latent_dim]; "
            f"found {table.ndim}-D array with shape {table.shape}"
        )
    if table.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column; found shape {table.shape}")
    if table.shape[0] < min_rows:
        raise ValueError(
            f"{name} must have at least {min_rows} rows (samples); found {table.shape[0]}"
        )
    if not np.all(np.isfinite(table)):
        bad = int(np.count_nonzero(~np.isfinite(table)))
        raise ValueError(f"{name} must be finite; found {bad} NaN/inf value(s)")
    return table


def _as_1d(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D; found shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    return array


def as_error_mask(is_error: Any, n: int | None = None) -> np.ndarray:
    raw = _as_1d(is_error, "is_error")
    if raw.dtype != bool:
        try:
            numeric = raw.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"is_error must be boolean or 0/1; could not convert: {exc}") from exc
        if not np.all(np.isin(numeric, (0.0, 1.0))):
            raise ValueError(
                "is_error must be boolean or 0/1; found values "
                f"{sorted(set(np.unique(numeric).tolist()) - {0.0, 1.0})[:5]}"
            )
        raw = numeric.astype(bool)
    if n is not None and raw.shape[0] != n:
        raise ValueError(f"is_error has {raw.shape[0]} entries but there are {n} samples")
    return raw


# --------------------------------------------------------------------------- mixture
def _centre_and_scale(table: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre the table and return it divided by one global scale, plus that scale.

    A single scalar (the root-mean-square per-dimension standard deviation) is used
    rather than per-dimension standardisation: latent dimensions share the same units,
    a scalar keeps every covariance type (including ``spherical``) meaningful, and the
    fitted parameters can be mapped back to latent units exactly.
    """
    centre = table.mean(axis=0)
    centred = table - centre
    scale = float(np.sqrt(np.mean(centred.var(axis=0))))
    if not np.isfinite(scale) or scale <= 0.0:
        # All rows identical: there is nothing to scale, keep units as they are.
        scale = 1.0
    return centred / scale, scale


def _to_latent_units(mixture: GaussianMixture, centre: np.ndarray, scale: float) -> None:
    """Rewrite a mixture fitted on ``(x - centre) / scale`` so it applies to raw ``x``.

    For ``y = (x - c) / s`` the model in x has means ``s * mu + c`` and covariances
    ``s**2 * Sigma``; the Cholesky factors of the precisions scale by ``1 / s``. This is
    exact for every covariance type, so ``predict``/``score_samples`` take raw latents.
    """
    mixture.means_ = mixture.means_ * scale + centre
    mixture.covariances_ = mixture.covariances_ * scale**2
    mixture.precisions_cholesky_ = mixture.precisions_cholesky_ / scale
    mixture.precisions_ = mixture.precisions_ / scale**2


def fit_mixture(
    latents: Any,
    max_components: int = 8,
    seed: int = 0,
    covariance_type: str = "full",
    min_components: int = 1,
) -> GaussianMixture:
    """Fit a Gaussian mixture to the latent table, choosing the number of components by BIC.

    Candidates with ``min_components`` .. ``min(max_components, n - 1, n_distinct_rows)`` components are
    fitted on the centred table divided by one global scale (so the fit, including the
    fixed ``reg_covar`` floor, does not depend on the latent units) and the one with the
    lowest BIC is kept. Its parameters are then mapped back to latent units, so the
    returned estimator's ``predict``/``predict_proba``/``score_samples`` take raw latents.

    The BIC of every candidate (computed in the scaled space) is attached to the returned
    estimator as ``bic_by_n_components_`` (``dict[int, float]``).

    Note:
        BIC can reward giving a few isolated points a tight component of their own, so
        mixture density is *not* a reliable outlier score; use :func:`outlier_scores`.

    Args:
        latents: Latent table ``[n_samples, latent_dim]``, finite, at least 2 rows.
        max_components: Largest number of components tried (>= 1).
        seed: Random state of every candidate fit; the result is deterministic given it.
        covariance_type: One of ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``.
        min_components: Smallest number of components tried (a fine partition asks for many;
            capped like ``max_components``).

    Returns:
        The fitted ``sklearn.mixture.GaussianMixture`` in latent units.

    Raises:
        ValueError: If ``latents`` is not a finite 2-D array with >= 2 rows, or an
            argument is out of range.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z = np.concatenate([rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (30, 2))])
        >>> fit_mixture(z, max_components=4).n_components
        2
    """
    table = as_latent_table(latents)
    if isinstance(max_components, bool) or not isinstance(max_components, (int, np.integer)):
        raise ValueError(f"max_components must be an int; found {type(max_components).__name__}")
    if max_components < 1:
        raise ValueError(f"max_components must be >= 1; found {max_components}")
    if covariance_type not in _COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {_COVARIANCE_TYPES}; found {covariance_type!r}"
        )

    n_rows = table.shape[0]
    # More components than distinct points only produces degenerate, warning-prone fits.
    n_distinct = int(np.unique(table, axis=0).shape[0])
    upper = max(1, min(int(max_components), n_rows - 1, n_distinct))
    lower = max(1, min(int(min_components), upper))

    centre = table.mean(axis=0)
    scaled, scale = _centre_and_scale(table)

    best: GaussianMixture | None = None
    best_bic = math.inf
    bic_by_k: dict[int, float] = {}
    # Latent tables are small (hundreds to thousands of rows, few columns): BLAS/OpenMP
    # threads only add start-up cost and thrash on a busy machine, so fit single-threaded.
    with threadpool_limits(limits=1):
        for n_components in range(lower, upper + 1):
            candidate = GaussianMixture(
                n_components=n_components,
                covariance_type=covariance_type,
                # Several k-means starts make the BIC comparison less hostage to one
                # bad initialisation.
                n_init=3,
                max_iter=500,
                random_state=seed,
            )
            candidate.fit(scaled)
            bic = float(candidate.bic(scaled))
            bic_by_k[n_components] = bic
            # Strict "<" keeps the smaller model on ties.
            if bic < best_bic:
                best, best_bic = candidate, bic
    if best is None:  # unreachable: upper >= 1 guarantees one candidate
        raise RuntimeError("no mixture candidate was fitted")
    _to_latent_units(best, centre, scale)
    best.bic_by_n_components_ = bic_by_k
    return best


# --------------------------------------------------------------------------- clusters
# eq=False: array fields make generated __eq__/__hash__ ambiguous; compare fields.
@dataclass(frozen=True, eq=False)
class ClusterResult:
    """Clusters of the latent table.

    Clusters are renumbered by size (hard-assignment count), largest first, so label 0
    is always the largest cluster; ties are broken by mixture weight.

    Attributes:
        labels: ``int`` array ``[n_samples]`` of cluster labels in ``0 .. n_clusters-1``.
        n_clusters: Number of mixture components (a component may, rarely, receive no
            hard assignment; it then appears last with size 0).
        centers: Component means in latent units, ``[n_clusters, latent_dim]``, in label
            order.
        weights: Mixture weights ``[n_clusters]`` in label order (sum to 1).
        sizes: Number of samples per label ``[n_clusters]``.
        mixture: The fitted mixture (latent units, *original* component order).
        component_order: ``component_order[label]`` is the mixture component index of
            ``label``; use it to translate ``mixture.predict`` output.
        main_cluster: Label of the heaviest component (largest weight), i.e. the
            dominant annotation style; almost always 0.
    """

    labels: np.ndarray
    n_clusters: int
    centers: np.ndarray
    weights: np.ndarray
    sizes: np.ndarray
    mixture: GaussianMixture = field(repr=False)
    component_order: np.ndarray = field(repr=False)
    main_cluster: int = 0


def cluster_latents(
    latents: Any,
    max_components: int = 8,
    seed: int = 0,
    covariance_type: str = "full",
    min_components: int = 1,
) -> ClusterResult:
    """Cluster the latent table with a BIC-selected Gaussian mixture.

    Args:
        latents: Latent table ``[n_samples, latent_dim]``.
        max_components: Largest number of mixture components tried.
        seed: Random state; identical inputs and seed give identical results.
        covariance_type: Mixture covariance type, see :func:`fit_mixture`.
        min_components: Smallest number of mixture components tried, see :func:`fit_mixture`.

    Returns:
        A :class:`ClusterResult` whose labels are ordered by cluster size (0 = largest).

    Raises:
        ValueError: On invalid input, see :func:`fit_mixture`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z = np.concatenate([rng.normal(0, 0.1, (40, 2)), rng.normal(5, 0.1, (20, 2))])
        >>> result = cluster_latents(z, max_components=4)
        >>> result.n_clusters, result.sizes.tolist(), result.main_cluster
        (2, [40, 20], 0)
    """
    table = as_latent_table(latents)
    mixture = fit_mixture(table, max_components=max_components, seed=seed,
                          covariance_type=covariance_type, min_components=min_components)
    raw_labels = mixture.predict(table)
    n_components = int(mixture.n_components)
    counts = np.bincount(raw_labels, minlength=n_components)
    weights = np.asarray(mixture.weights_, dtype=np.float64)
    # lexsort: last key is primary -> size desc, then weight desc, then original index.
    order = np.lexsort((np.arange(n_components), -weights, -counts))
    relabel = np.empty(n_components, dtype=np.int64)
    relabel[order] = np.arange(n_components)
    ordered_weights = weights[order]
    return ClusterResult(
        labels=relabel[raw_labels].astype(np.int64),
        n_clusters=n_components,
        centers=np.asarray(mixture.means_, dtype=np.float64)[order].copy(),
        weights=ordered_weights.copy(),
        sizes=counts[order].astype(np.int64),
        mixture=mixture,
        component_order=order.astype(np.int64),
        main_cluster=int(np.argmax(ordered_weights)),
    )


# --------------------------------------------------------------------------- outliers
def _default_k(n_rows: int) -> int:
    return int(min(max(3, round(math.sqrt(n_rows))), n_rows - 1))


def outlier_scores(latents: Any, k: int | None = None) -> np.ndarray:
    """Per-sample suspicion score: relative k-nearest-neighbour distance (higher = worse).

    ``score_i = mean distance from z_i to its k nearest other samples
    / median of that quantity over the table``. A score near 1 means "as crowded as a
    typical sample"; an erroneous sample far from every style cluster scores >> 1.

    Why this score rather than mixture density or a KDE:

    * A BIC-selected Gaussian mixture can give a few isolated points a tight component
      of their own (a near-singular covariance buys a large likelihood), which makes
      those very points look *dense*. The k-NN distance cannot be fooled this way: a
      point's neighbours must be *other* samples, so an isolated point is far from them
      whatever model is fitted. Using ``k ~ sqrt(n)`` (at least 3) also keeps a small
      group of fewer than ``k`` errors that happen to sit together suspicious, because
      its k-th neighbours lie in the distant clusters.
    * A Gaussian KDE with a Scott/Silverman bandwidth derives the bandwidth from the
      global spread; with several separated clusters that spread is dominated by the
      between-cluster distances, so the kernel over-smooths and points between clusters
      can look dense. k-NN adapts to local scale instead.
    * Dividing by the median k-NN distance makes the score unit-free (invariant to
      translation, rotation and global rescaling of the latent space), so thresholds
      transfer between runs. Distances are Euclidean in raw latent units, because latent
      dimensions share units and per-dimension standardisation would inflate dimensions
      that carry only noise.

    Args:
        latents: Latent table ``[n_samples, latent_dim]``, finite, at least 2 rows.
        k: Number of neighbours; default ``round(sqrt(n))`` clipped to ``[3, n - 1]``.

    Returns:
        ``float64`` array ``[n_samples]``; all zeros if every sample is identical.

    Raises:
        ValueError: On invalid ``latents`` or ``k`` outside ``[1, n - 1]``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z = np.concatenate([rng.normal(0, 0.1, (50, 2)), [[4.0, 4.0]]])
        >>> int(np.argmax(outlier_scores(z)))
        50
    """
    table = as_latent_table(latents)
    n_rows = table.shape[0]
    if k is None:
        k = _default_k(n_rows)
    elif isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an int or None; found {type(k).__name__}")
    elif not 1 <= k <= n_rows - 1:
        raise ValueError(f"k must be in [1, n_samples - 1] = [1, {n_rows - 1}]; found {k}")

    # kneighbors() without X excludes each query point itself, even with duplicates.
    distances, _ = NearestNeighbors(n_neighbors=int(k)).fit(table).kneighbors()
    knn = distances.mean(axis=1)
    reference = float(np.median(knn))
    if reference <= 0.0:
        # More than half the samples are exact duplicates; fall back to the typical
        # non-zero spacing so the remaining points still get a finite ranking.
        positive = knn[knn > 0.0]
        if positive.size == 0:
            return np.zeros(n_rows, dtype=np.float64)
        reference = float(np.median(positive))
    return knn / reference


# --------------------------------------------------------------------------- metrics
def score_clusters(cluster_labels: Any, true_groups: Any) -> dict[str, float]:
    """Agreement between found clusters and known groups (label permutations ignored).

    Args:
        cluster_labels: Predicted cluster label per sample.
        true_groups: True group per sample (any hashable labels, e.g. style names).

    Returns:
        ``{"ari": adjusted Rand index, "nmi": normalised mutual information}`` as floats.

    Raises:
        ValueError: If the inputs are not 1-D, empty, or differ in length.

    Example:
        >>> score_clusters([0, 0, 1, 1], ["a", "a", "b", "b"])
        {'ari': 1.0, 'nmi': 1.0}
    """
    predicted = _as_1d(cluster_labels, "cluster_labels")
    truth = _as_1d(true_groups, "true_groups")
    if predicted.shape[0] != truth.shape[0]:
        raise ValueError(
            f"cluster_labels has {predicted.shape[0]} entries but true_groups has "
            f"{truth.shape[0]}"
        )
    return {
        "ari": float(adjusted_rand_score(truth, predicted)),
        "nmi": float(normalized_mutual_info_score(truth, predicted)),
    }


def score_detection(scores: Any, is_error: Any, k: int | None = None) -> dict[str, float]:
    """How well suspicion ``scores`` rank the true errors first.

    Args:
        scores: Suspicion score per sample, higher = more suspicious; finite.
        is_error: Boolean (or 0/1) ground truth per sample.
        k: Cut-off for ``precision_at_k``; defaults to the number of true errors (so
            ``precision_at_k`` is then the R-precision). Ties in ``scores`` at the cut
            are broken by sample order.

    Returns:
        ``{"auroc", "average_precision", "precision_at_k", "k"}``; the first three are
        floats, ``k`` the int used.

    Raises:
        ValueError: If lengths differ, scores are not finite, ``is_error`` has no
            positives or no negatives (the ranking metrics are then undefined), or ``k``
            is outside ``[1, n]``.

    Example:
        >>> score_detection([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
        {'auroc': 0.75, 'average_precision': 0.8333333333333333, 'precision_at_k': 0.5, 'k': 2}
    """
    values = _as_1d(scores, "scores").astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite; found NaN/inf")
    truth = as_error_mask(is_error, n=values.shape[0])
    n_pos = int(truth.sum())
    n_neg = int(truth.shape[0] - n_pos)
    if n_pos == 0:
        raise ValueError(
            "is_error has no positives (no true errors); detection metrics are undefined"
        )
    if n_neg == 0:
        raise ValueError(
            "is_error has no negatives (every sample is an error); detection metrics are "
            "undefined"
        )
    if k is None:
        k = n_pos
    elif isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an int or None; found {type(k).__name__}")
    elif not 1 <= k <= values.shape[0]:
        raise ValueError(f"k must be in [1, n_samples] = [1, {values.shape[0]}]; found {k}")
    top = np.argsort(-values, kind="stable")[: int(k)]
    return {
        "auroc": float(roc_auc_score(truth, values)),
        "average_precision": float(average_precision_score(truth, values)),
        "precision_at_k": float(truth[top].mean()),
        "k": int(k),
    }


def summarize_latent_space(
    latents: Any,
    true_groups: Sequence[Any] | np.ndarray | None = None,
    is_error: Sequence[Any] | np.ndarray | None = None,
    seed: int = 0,
    max_components: int = 8,
    k: int | None = None,
) -> dict[str, Any]:
    """Cluster, score and (when ground truth is given) evaluate a latent table.

    Every value in the returned dict is plain Python (int/float/list/dict/None), so it
    can go straight into ``atomic_write_json``.

    Args:
        latents: Latent table ``[n_samples, latent_dim]``.
        true_groups: Optional true group (annotation style) per sample.
        is_error: Optional boolean ground truth "this sample is erroneous".
        seed: Random state of the mixture fit.
        max_components: Largest number of mixture components tried.
        k: Neighbours for :func:`outlier_scores` (default ``sqrt(n)``, see there).

    Returns:
        A dict with

        * ``n_samples``, ``latent_dim``, ``n_clusters``, ``main_cluster``;
        * ``labels`` (cluster per sample, 0 = largest), ``cluster_sizes``,
          ``cluster_weights``, ``cluster_centers`` (latent units);
        * ``outlier_scores`` (per sample, higher = more suspicious) and
          ``ranking`` (sample indices, most suspicious first);
        * ``metrics``: ``ari``/``nmi`` over all samples when ``true_groups`` is given;
          ``ari_clean``/``nmi_clean`` over non-error samples when both are given;
          ``auroc``/``average_precision``/``precision_at_k``/``k`` when ``is_error`` is
          given. If ``is_error`` has no positives or no negatives (e.g. a clean control
          run) the detection metrics are ``None`` rather than raising.

    Raises:
        ValueError: On invalid ``latents`` or ground truth of the wrong length.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z = np.concatenate([rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (30, 2)),
        ...                     [[10.0, -10.0]]])
        >>> groups = [0] * 30 + [1] * 30 + [0]
        >>> errors = [False] * 60 + [True]
        >>> out = summarize_latent_space(z, groups, errors)
        >>> out["ranking"][0], out["metrics"]["auroc"], out["metrics"]["ari_clean"]
        (60, 1.0, 1.0)
    """
    table = as_latent_table(latents)
    n_rows = table.shape[0]
    clusters = cluster_latents(table, max_components=max_components, seed=seed)
    scores = outlier_scores(table, k=k)

    metrics: dict[str, Any] = {}
    mask: np.ndarray | None = None
    if is_error is not None:
        mask = as_error_mask(is_error, n=n_rows)
    if true_groups is not None:
        groups = _as_1d(true_groups, "true_groups")
        if groups.shape[0] != n_rows:
            raise ValueError(f"true_groups has {groups.shape[0]} entries but there are "
                             f"{n_rows} samples")
        metrics.update(score_clusters(clusters.labels, groups))
        if mask is not None:
            clean = ~mask
            if clean.any():
                clean_scores = score_clusters(clusters.labels[clean], groups[clean])
                metrics["ari_clean"] = clean_scores["ari"]
                metrics["nmi_clean"] = clean_scores["nmi"]
            else:
                metrics["ari_clean"] = metrics["nmi_clean"] = None
    if mask is not None:
        if mask.any() and not mask.all():
            metrics.update(score_detection(scores, mask))
        else:
            metrics.update({"auroc": None, "average_precision": None,
                            "precision_at_k": None, "k": None})

    return {
        "n_samples": int(n_rows),
        "latent_dim": int(table.shape[1]),
        "n_clusters": int(clusters.n_clusters),
        "main_cluster": int(clusters.main_cluster),
        "labels": [int(v) for v in clusters.labels],
        "cluster_sizes": [int(v) for v in clusters.sizes],
        "cluster_weights": [float(v) for v in clusters.weights],
        "cluster_centers": [[float(v) for v in row] for row in clusters.centers],
        "outlier_scores": [float(v) for v in scores],
        "ranking": [int(v) for v in np.argsort(-scores, kind="stable")],
        "metrics": metrics,
    }
