"""Pictures of the latent map.

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the Agg canvas
directly, so no global pyplot state is touched and no display is needed; callers'
backend choice is left alone. Every PNG is written through
:func:`HyperSORTLib.utils.io.atomic_path`, so a reader never sees a half-written image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.decomposition import PCA

from HyperSORTLib.latentmap.clusters import as_latent_table
from HyperSORTLib.utils.io import atomic_path

__all__ = ["best_axial_slice", "plot_cluster_map", "plot_latent_map", "plot_latent_maps", "plot_probe_overlays",
           "project_2d"]

DPI = 150

# Okabe-Ito palette: distinguishable under the common colour-vision deficiencies.
# Markers cycle alongside so that more than 8 groups (or greyscale prints) stay readable.
_PALETTE = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7",
    "#56B4E9", "#D55E00", "#F0E442", "#000000",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_HIGHLIGHT = "#D55E00"


# --------------------------------------------------------------------------- geometry
def project_2d(latents: Any) -> tuple[np.ndarray, tuple[str, str]]:
    """Return 2-D plotting coordinates and matching axis labels for a latent table.

    ``D == 2`` is used as is (``"z1"``, ``"z2"``). ``D > 2`` is projected on the first
    two principal axes, and the labels say so together with the explained variance.
    ``D == 1`` is drawn on a line (``y = 0``).

    Args:
        latents: Latent table ``[n_samples, latent_dim]`` (at least 1 row).

    Returns:
        ``(xy, (x_label, y_label))`` with ``xy`` of shape ``[n_samples, 2]``.

    Example:
        >>> xy, names = project_2d(np.eye(3))
        >>> xy.shape, names[0].startswith("PC1")
        ((3, 2), True)
    """
    table = as_latent_table(latents, min_rows=1)
    project, labels = _projection(table)
    return project(table), labels


def _projection(table: np.ndarray) -> tuple[Any, tuple[str, str]]:
    """The map ``[m, D] -> [m, 2]`` that :func:`project_2d` applies to ``table``, and its axis labels.

    Other points (e.g. cluster centres) go through the same map as the samples.
    """
    dim = table.shape[1]
    if dim == 2:
        return (lambda points: np.array(points, dtype=np.float64).reshape(-1, 2)), ("z1", "z2")
    if dim == 1:
        def on_line(points: Any) -> np.ndarray:
            column = np.asarray(points, dtype=np.float64).reshape(-1, 1)
            return np.column_stack([column[:, 0], np.zeros(column.shape[0])])
        return on_line, ("z1", "(1-D latent)")
    with np.errstate(invalid="ignore", divide="ignore"):  # a table of identical rows has no variance
        pca = PCA(n_components=min(2, table.shape[0]), svd_solver="full").fit(table)
    mean = pca.mean_
    share = np.nan_to_num(pca.explained_variance_ratio_, nan=0.0)  # NaN when every row is the same
    axes = pca.components_
    # Fix each axis' sign (largest loading positive) so repeated plots do not mirror.
    signs = np.sign(axes[np.arange(axes.shape[0]), np.argmax(np.abs(axes), axis=1)])
    signs[signs == 0] = 1.0
    axes = axes * signs[:, None]
    labels = tuple(
        f"PC{i + 1} of z1..z{dim} ({100 * share[i]:.0f}% var.)" for i in range(2)
    )
    return (lambda points: (np.asarray(points, dtype=np.float64).reshape(-1, dim) - mean) @ axes.T), \
        (labels[0], labels[1])


# --------------------------------------------------------------------------- helpers
def _check_length(values: Any, n: int, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with one entry per sample ({n}); "
                         f"found shape {array.shape}")
    return array


def _group_order(groups: np.ndarray) -> list[Any]:
    """Distinct groups, sorted when comparable (stable legends), else first appearance."""
    seen: dict[Any, None] = {}
    for value in groups.tolist():
        seen.setdefault(value, None)
    distinct = list(seen)
    try:
        return sorted(distinct)
    except TypeError:
        return distinct


def _resolve_annotations(
    annotate: Sequence[Any] | None, ids: np.ndarray | None, n: int
) -> list[tuple[int, str]]:
    """Map the ids in ``annotate`` to ``(row index, text)``; ints index rows without ids."""
    if annotate is None:
        return []
    lookup: dict[str, int] = {}
    if ids is not None:
        for index, value in enumerate(ids.tolist()):
            lookup.setdefault(str(value), index)
    resolved: list[tuple[int, str]] = []
    for item in annotate:
        key = str(item)
        if key in lookup:
            resolved.append((lookup[key], key))
        elif ids is None and isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= int(item) < n:
                raise ValueError(f"annotate index {item} is outside [0, {n - 1}]")
            resolved.append((int(item), str(int(item))))
        else:
            where = "labels" if ids is not None else "the row indices"
            raise ValueError(f"annotate entry {item!r} is not one of {where}")
    return resolved


def _draw_groups(ax: Axes, xy: np.ndarray, groups: np.ndarray, legend_title: str) -> None:
    order = _group_order(groups)
    handles = []
    for i, group in enumerate(order):
        colour = _PALETTE[i % len(_PALETTE)]
        marker = _MARKERS[(i // len(_PALETTE) + i) % len(_MARKERS)]
        member = np.array([value == group for value in groups.tolist()], dtype=bool)
        ax.scatter(xy[member, 0], xy[member, 1], s=22, c=colour, marker=marker,
                   edgecolors="white", linewidths=0.4, alpha=0.9, zorder=2)
        handles.append(Line2D([], [], linestyle="", marker=marker, color=colour,
                              markeredgecolor="white", markersize=7,
                              label=f"{group} (n={int(member.sum())})"))
    # Many groups would cover the data; move the legend outside the axes then.
    if len(order) > 6:
        ax.legend(handles=handles, title=legend_title, fontsize=8, title_fontsize=8,
                  loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    else:
        ax.legend(handles=handles, title=legend_title, fontsize=8, title_fontsize=8,
                  loc="best", framealpha=0.85)


def _draw_score(fig: Figure, ax: Axes, xy: np.ndarray, score: np.ndarray,
                score_label: str) -> None:
    # Draw the most suspicious points last so they are not hidden under the crowd.
    order = np.argsort(score, kind="stable")
    points = ax.scatter(xy[order, 0], xy[order, 1], c=score[order], cmap="viridis", s=22,
                        edgecolors="none", alpha=0.95, zorder=2)
    bar = fig.colorbar(points, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(score_label, fontsize=9)
    bar.ax.tick_params(labelsize=8)


def _style_axes(ax: Any, axis_labels: Sequence[str], title: str | None) -> None:
    """Axis labels, light grid and title shared by the latent-map panels."""
    ax.set_xlabel(axis_labels[0], fontsize=10)
    ax.set_ylabel(axis_labels[1], fontsize=10)
    ax.tick_params(labelsize=8)
    ax.grid(True, color="#dddddd", linewidth=0.5, zorder=0)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=11)


def _draw_annotations(ax: Axes, xy: np.ndarray, marks: list[tuple[int, str]]) -> None:
    if not marks:
        return
    rows = np.array([row for row, _ in marks], dtype=int)
    ax.scatter(xy[rows, 0], xy[rows, 1], s=110, facecolors="none", edgecolors=_HIGHLIGHT,
               linewidths=1.4, zorder=3)
    for row, text in marks:
        ax.annotate(text, xy=(xy[row, 0], xy[row, 1]), xytext=(6, 6),
                    textcoords="offset points", fontsize=8, color="black", zorder=4,
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white",
                          "edgecolor": _HIGHLIGHT, "alpha": 0.85, "linewidth": 0.6})


def _draw_panel(
    fig: Figure,
    ax: Axes,
    xy: np.ndarray,
    axis_labels: tuple[str, str],
    groups: np.ndarray | None,
    score: np.ndarray | None,
    marks: list[tuple[int, str]],
    title: str,
    legend_title: str,
    score_label: str,
) -> None:
    if groups is not None:
        _draw_groups(ax, xy, groups, legend_title)
    elif score is not None:
        _draw_score(fig, ax, xy, score, score_label)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=22, c=_PALETTE[0], edgecolors="white",
                   linewidths=0.4, alpha=0.9, zorder=2)
    _draw_annotations(ax, xy, marks)
    _style_axes(ax, axis_labels, title)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    target = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(target) as tmp:
        # The temporary name ends in ".tmp", so the format must be explicit.
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return target


def _prepare(
    latents: Any,
    colour_by: Any,
    labels: Any,
    annotate: Sequence[Any] | None,
    score: Any,
) -> tuple[np.ndarray, tuple[str, str], np.ndarray | None, np.ndarray | None,
           list[tuple[int, str]]]:
    table = as_latent_table(latents, min_rows=1)
    n = table.shape[0]
    xy, axis_labels = project_2d(table)
    groups = None if colour_by is None else _check_length(colour_by, n, "colour_by")
    ids = None if labels is None else _check_length(labels, n, "labels")
    values = None
    if score is not None:
        values = _check_length(score, n, "score").astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("score must be finite; found NaN/inf")
    marks = _resolve_annotations(annotate, ids, n)
    return xy, axis_labels, groups, values, marks


# --------------------------------------------------------------------------- public
def plot_latent_map(
    latents: Any,
    path: str | os.PathLike,
    colour_by: Sequence[Any] | np.ndarray | None = None,
    labels: Sequence[Any] | np.ndarray | None = None,
    title: str = "",
    annotate: Sequence[Any] | None = None,
    score: Sequence[float] | np.ndarray | None = None,
    legend_title: str = "group",
    score_label: str = "suspicion score",
) -> Path:
    """Scatter plot of the latent table, written atomically as a PNG (150 dpi).

    Args:
        latents: Latent table ``[n_samples, latent_dim]``. With ``latent_dim > 2`` the
            points are projected on the first two principal axes (the axis labels say
            so); with 2 the axes are ``z1``/``z2``.
        path: Output PNG path; parent folders are created.
        colour_by: Optional categorical value per sample (e.g. annotation style);
            points get a colour-blind-friendly colour + marker per group and a legend
            with the group names and sizes.
        labels: Optional sample id per sample (e.g. case names), used to find the
            ``annotate`` entries.
        title: Figure title.
        annotate: Optional ids to circle and label, e.g. the top suspicious samples.
            Entries are looked up in ``labels``; without ``labels`` they are row indices.
        score: Optional continuous value per sample (e.g. :func:`outlier_scores`),
            shown with a colour bar. Give either ``colour_by`` or ``score``; use
            :func:`plot_latent_maps` to show both side by side.
        legend_title: Legend heading for ``colour_by``.
        score_label: Colour-bar label for ``score``.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: On an invalid latent table, per-sample arrays of the wrong length,
            non-finite scores, unknown ``annotate`` ids, or both ``colour_by`` and
            ``score``.

    Example:
        >>> z = np.random.default_rng(0).normal(size=(20, 2))
        >>> plot_latent_map(z, "out/map.png", colour_by=[0, 1] * 10,
        ...                 annotate=[3])  # doctest: +SKIP
        PosixPath('out/map.png')
    """
    if colour_by is not None and score is not None:
        raise ValueError("give either colour_by or score, not both "
                         "(plot_latent_maps shows both side by side)")
    xy, axis_labels, groups, values, marks = _prepare(latents, colour_by, labels,
                                                      annotate, score)
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    _draw_panel(fig, ax, xy, axis_labels, groups, values, marks, title, legend_title,
                score_label)
    return _save(fig, path)


def plot_latent_maps(
    latents: Any,
    path: str | os.PathLike,
    colour_by: Sequence[Any] | np.ndarray,
    score: Sequence[float] | np.ndarray,
    labels: Sequence[Any] | np.ndarray | None = None,
    title: str = "",
    annotate: Sequence[Any] | None = None,
    legend_title: str = "group",
    score_label: str = "suspicion score",
    panel_titles: tuple[str, str] = ("true groups", "suspicion score"),
) -> Path:
    """Two-panel figure: groups (left) and suspicion score (right) on the same map.

    Arguments are as in :func:`plot_latent_map`; ``annotate`` marks appear on both
    panels so a suspicious sample can be traced to its group.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: As :func:`plot_latent_map`.

    Example:
        >>> z = np.random.default_rng(0).normal(size=(20, 2))
        >>> plot_latent_maps(z, "out/maps.png", [0, 1] * 10,
        ...                  np.linalg.norm(z, axis=1), annotate=[0])  # doctest: +SKIP
        PosixPath('out/maps.png')
    """
    if colour_by is None or score is None:
        raise ValueError("plot_latent_maps needs both colour_by and score")
    xy, axis_labels, groups, values, marks = _prepare(latents, colour_by, labels,
                                                      annotate, score)
    fig = Figure(figsize=(12.0, 5.0), layout="constrained")
    left = fig.add_subplot(1, 2, 1)
    right = fig.add_subplot(1, 2, 2, sharex=left, sharey=left)
    _draw_panel(fig, left, xy, axis_labels, groups, None, marks, panel_titles[0],
                legend_title, score_label)
    _draw_panel(fig, right, xy, axis_labels, None, values, marks, panel_titles[1],
                legend_title, score_label)
    if title:
        fig.suptitle(title, fontsize=12)
    return _save(fig, path)


def plot_cluster_map(
    latents: Any,
    path: str | os.PathLike,
    clusters: Sequence[int] | np.ndarray,
    centers: Any,
    main_cluster: int = 0,
    title: str = "",
    labels: Sequence[Any] | np.ndarray | None = None,
    annotate: Sequence[Any] | None = None,
    names: Sequence[str] | None = None,
    muted: Sequence[bool] | None = None,
) -> Path:
    """Latent map coloured by cluster, with each cluster centre drawn as a numbered star.

    Args:
        latents: Latent table ``[n_samples, latent_dim]``; ``latent_dim > 2`` is projected on
            the first two principal axes (the axis labels say so), centres included.
        path: Output PNG path; parent folders are created.
        clusters: Cluster label per sample, ``0 .. n_clusters - 1``.
        centers: Cluster centres ``[n_clusters, latent_dim]`` in label order.
        main_cluster: Label of the main mode (named in the legend).
        title: Figure title.
        labels: Optional sample ids, used to find the ``annotate`` entries.
        annotate: Optional ids (or row indices without ``labels``) to circle and label.
        names: Optional legend name of every cluster (default ``cluster K``, the main mode named).
        muted: Optional flag per cluster: drawn in grey, without a star (e.g. isolated cases that
            are not an annotation style).

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: On an invalid table, cluster labels of the wrong length or outside the
            centres, centres of the wrong dimension, or a name per cluster missing.
    """
    table = as_latent_table(latents, min_rows=1)
    n, dim = table.shape
    groups = _check_length(clusters, n, "clusters").astype(np.int64)
    centres = as_latent_table(centers, "centers", min_rows=1)
    if centres.shape[1] != dim:
        raise ValueError(f"centers have {centres.shape[1]} dimensions but the latents have {dim}")
    if groups.min() < 0 or groups.max() >= centres.shape[0]:
        raise ValueError(f"cluster labels must lie in 0..{centres.shape[0] - 1}; found "
                         f"{int(groups.min())}..{int(groups.max())}")
    if names is not None and len(names) != centres.shape[0]:
        raise ValueError(f"names must give one name per cluster ({centres.shape[0]}); found {len(names)}")
    project, axis_labels = _projection(table)
    xy, centre_xy = project(table), project(centres)
    ids = None if labels is None else _check_length(labels, n, "labels")
    marks = _resolve_annotations(annotate, ids, n)

    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    handles = []
    if muted is not None and len(muted) != centres.shape[0]:
        raise ValueError(f"muted must give one flag per cluster ({centres.shape[0]}); found {len(muted)}")
    for c in range(centres.shape[0]):
        colour, marker = _PALETTE[c % len(_PALETTE)], _MARKERS[(c // len(_PALETTE) + c) % len(_MARKERS)]
        grey = muted is not None and bool(muted[c])
        if grey:
            colour = "#9a9a9a"
        member = groups == c
        ax.scatter(xy[member, 0], xy[member, 1], s=22, c=colour, marker=marker, edgecolors="white",
                   linewidths=0.4, alpha=0.9, zorder=2)
        if not grey:
            ax.scatter(centre_xy[c, 0], centre_xy[c, 1], s=260, c=colour, marker="*", edgecolors="black",
                       linewidths=0.9, zorder=4)
        ax.annotate(str(c), xy=(centre_xy[c, 0], centre_xy[c, 1]) if not grey else (xy[member, 0].mean(),
                    xy[member, 1].mean()) if member.any() else (centre_xy[c, 0], centre_xy[c, 1]),
                    xytext=(7, -12), textcoords="offset points", fontsize=9,
                    fontweight="normal" if grey else "bold", zorder=5)
        name = names[c] if names is not None else f"cluster {c}" + (" (main mode)" if c == main_cluster else "")
        handles.append(Line2D([], [], linestyle="", marker=marker, color=colour, markeredgecolor="white",
                              markersize=7, label=f"{name} (n={int(member.sum())})"))
    handles.append(Line2D([], [], linestyle="", marker="*", color="white", markeredgecolor="black",
                          markersize=12, label="centre"))
    outside = len(handles) > 7
    ax.legend(handles=handles, title="style" if names is not None else "cluster", fontsize=8, title_fontsize=8, framealpha=0.85,
              **({"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0} if outside
                 else {"loc": "best"}))
    _draw_annotations(ax, xy, marks)
    _style_axes(ax, axis_labels, title)
    return _save(fig, path)


#: Class colours of the probe overlays (class 1 first); background is not drawn.
_CLASS_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
                  "#AA3377", "#8C564B", "#17BECF", "#BCBD22", "#FF9896")


def _axial_slice(volume: np.ndarray, index: int) -> np.ndarray:
    """Axial slice of a RAS-oriented ``[X, Y, Z]`` volume in radiological display order.

    Rows run anterior (top) to posterior; columns run from the patient's right (left of the
    picture) to the patient's left, as radiologists view axial CT.
    """
    return volume[::-1, ::-1, index].T


def best_axial_slice(label_maps: Sequence[np.ndarray]) -> int:
    """Axial index (last axis) with the most foreground over ``label_maps``; the middle if none."""
    maps = [np.asarray(m) for m in label_maps]
    if not maps or any(m.ndim != 3 for m in maps):
        raise ValueError("best_axial_slice needs 3-D label maps")
    area = sum((m > 0).sum(axis=(0, 1)) for m in maps)
    return int(np.argmax(area)) if np.any(area > 0) else maps[0].shape[2] // 2


def plot_probe_overlays(
    images: Sequence[np.ndarray],
    label_maps: Sequence[Sequence[np.ndarray]],
    path: str | os.PathLike,
    class_names: Sequence[str],
    row_titles: Sequence[str],
    column_titles: Sequence[str],
    spacings: Sequence[Sequence[float]] | None = None,
    title: str = "",
) -> Path:
    """Grid of axial slices: one row per cluster, one column per probe case, segmentations overlaid.

    Each probe case is shown at the axial slice with the most foreground over all rows (see
    :func:`best_axial_slice`), in radiological orientation for RAS-oriented volumes (the
    patient's right on the left, marked "R"). Every foreground class gets a translucent fill and
    a contour in its own colour, the same in every panel.

    Args:
        images: Preprocessed probe volumes ``[X, Y, Z]``, intensities in [0, 1].
        label_maps: ``label_maps[row][column]``: label map of the probe ``column`` under the UNet
            of ``row`` (same shape as the image).
        path: Output PNG path.
        class_names: Names of the classes, background first.
        row_titles: One title per row (e.g. ``"cluster 1 (n=8)"``).
        column_titles: One title per probe case.
        spacings: Optional voxel spacing (mm) of each probe case, for the pixel aspect ratio.
        title: Figure title.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: On mismatched counts or shapes.
    """
    volumes = [np.asarray(v, dtype=np.float32) for v in images]
    n_cols, n_rows = len(volumes), len(label_maps)
    if n_cols == 0 or n_rows == 0:
        raise ValueError("plot_probe_overlays needs at least one probe image and one row of label maps")
    if len(row_titles) != n_rows or len(column_titles) != n_cols:
        raise ValueError(f"need {n_rows} row titles and {n_cols} column titles; found {len(row_titles)} and "
                         f"{len(column_titles)}")
    for r, row in enumerate(label_maps):
        if len(row) != n_cols:
            raise ValueError(f"row {r} has {len(row)} label maps; expected one per probe ({n_cols})")
        for c, label in enumerate(row):
            if np.shape(label) != volumes[c].shape or volumes[c].ndim != 3:
                raise ValueError(f"row {r}, probe {c}: label map {np.shape(label)} does not match the 3-D image "
                                 f"{volumes[c].shape}")
    slices = [best_axial_slice([label_maps[r][c] for r in range(n_rows)]) for c in range(n_cols)]
    aspects = [1.0] * n_cols
    if spacings is not None:
        aspects = [float(s[1]) / float(s[0]) for s in spacings]

    fig = Figure(figsize=(2.5 * n_cols + 0.6, 2.5 * n_rows + 0.9), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    from matplotlib.colors import to_rgba

    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            image = _axial_slice(volumes[c], slices[c])
            label = _axial_slice(np.asarray(label_maps[r][c]), slices[c])
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, aspect=aspects[c], interpolation="nearest")
            overlay = np.zeros((*label.shape, 4))
            for k in range(1, len(class_names)):
                mask = label == k
                if not mask.any():
                    continue
                colour = _CLASS_COLOURS[(k - 1) % len(_CLASS_COLOURS)]
                overlay[mask] = to_rgba(colour, 0.35)
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=0.9)
            ax.imshow(overlay, aspect=aspects[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.03, 0.97, "R", transform=ax.transAxes, fontsize=7, color="white", va="top", ha="left")
            if r == 0:
                ax.set_title(f"{column_titles[c]} (axial {slices[c]})", fontsize=9)
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=9)
    handles = [Line2D([], [], linestyle="", marker="s", markersize=8,
                      color=_CLASS_COLOURS[(k - 1) % len(_CLASS_COLOURS)], markeredgecolor="black",
                      label=str(class_names[k])) for k in range(1, len(class_names))]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)
