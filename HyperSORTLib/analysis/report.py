"""The audit report: figures and one self-contained HTML page.

The page carries its CSS inline and its images as ``data:image/png;base64`` URIs, loads nothing
from the network and runs no script, so it opens offline, can be mailed, and shows the same
everywhere. The figures are also kept as PNG files beside it.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from HyperSORTLib import __version__
from HyperSORTLib.analysis.annotations import describe_annotations
from HyperSORTLib.analysis.styles import describe_main_mode, row_name
from HyperSORTLib.latentmap.scores import SIGNALS

__all__ = ["png_data_uri", "render_figures", "render_report"]

_SIGNAL_TEXT = {
    "density_gmm": "log density under the Gaussian mixture's large components (low = suspicious)",
    "density_kde": "leave-one-out log density under a kernel density estimate (low = suspicious)",
    "own_loss": "Dice + cross-entropy loss at the end of training, under the sample's own latent",
    "main_mode_loss": "Dice + cross-entropy loss under the UNet decoded from the main mode",
    "mode_distance": "distance in latent units to the nearest large cluster centre",
    "knn_score": "mean distance to the k nearest samples, relative to the median sample",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.err td{background:#fde8e0}tr.main td{background:#e6f0fa}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
.scroll{max-height:38em;overflow:auto;border:1px solid #eee}
ul.summary li{margin:.2em 0}code{background:#f5f5f5;padding:0 .2em}
"""


def png_data_uri(path: str | Path) -> str:
    """``data:image/png;base64,...`` for a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _merge_rule(thresholds: dict[str, Any]) -> str:
    """How neighbouring components were merged into styles, in words (analyses written before the
    linkage was recorded used complete linkage)."""
    order = ("; components of a style's size merge first, and a smaller one then joins the style of its nearest "
             "neighbour when it segments like it" if thresholds.get("small_components", "merge") == "attach" else "")
    if thresholds.get("linkage", "complete") == "average":
        return ("Neighbouring components are merged (average linkage" + order + ") while no pair of them differs "
                "in kind and they segment alike on average over their cases")
    return ("Neighbouring components are merged (complete linkage" + order + ") while every pair of them segments "
            "alike")


def _scale_words(thresholds: dict[str, Any]) -> str:
    """How a class's difference is scaled, in words (analyses written before the scale was recorded
    measured it against the two volumes alone)."""
    if thresholds.get("volume_scale", "pair") == "typical":
        return (" (a class both draw at under half its usual volume across the map is measured against that "
                "volume, so two UNets that keep only remnants of a class count as alike)")
    return ""


def _annotation_words(thresholds: dict[str, Any]) -> str:
    """How the cases' own annotations shaped the styles, in words (analyses written before this was
    recorded used the decoded UNets alone)."""
    how = thresholds.get("annotations", "ignore")
    if how == "ignore":
        return ""
    words = ""
    if how == "members":
        words += (f" Two components holding at least {thresholds.get('annotation_min_members', 3)} cases each are "
                  f"also kept apart when their members annotate some class differently by more than "
                  f"{thresholds['volume']:.0%}: every annotation is measured against the UNet of the map's heaviest "
                  "component on the same scan, with that UNet's own trend with organ size removed, and the members' "
                  "medians are compared.")
    return words + (" The main mode's members whose own annotations differ from its usual member's the same way (one "
                    f"class, one direction, by more than {thresholds['volume']:.0%} and three robust standard deviations "
                    "of that class among the members; each annotation measured against the main mode's UNet, with that "
                    "UNet's trend with organ size removed), at least a style's size of them, form a style of their "
                    "own: a style the map has not yet moved out of the main mode. A member of another style whose "
                    "annotation differs from that style's usual member but is like the main mode's returns to the "
                    "main mode.")


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    if not np.isfinite(value):
        return ""
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"


# --------------------------------------------------------------------------- figures
def render_figures(result: Any, folder: Path) -> dict[str, Path]:
    """Write the report's PNGs into ``folder``; returns ``name -> path``."""
    from HyperSORTLib.analysis.plots import plot_cluster_map, plot_latent_map, plot_probe_overlays

    figures: dict[str, Path] = {}
    ids = list(result.case_ids)
    clusters = result.clusters
    n_flag = int(result.manifest.erroneous.sum()) if result.manifest is not None else 0
    top = [ids[i] for i in result.ranking[: max(1, min(n_flag or 5, len(ids)))]]
    figures["clusters"] = plot_cluster_map(result.latents, folder / "latent_map_clusters.png", clusters.labels,
                                           clusters.centers, clusters.main_cluster,
                                           names=[row_name(clusters, k) for k in range(clusters.n_clusters)],
                                           muted=[not s for s in clusters.is_style],
                                           title="Latent map: annotation styles and their centres")
    figures["suspicion"] = plot_latent_map(result.latents, folder / "latent_map_suspicion.png",
                                           score=result.suspicion, labels=ids, annotate=top,
                                           title=f"Latent map: combined suspicion (top {len(top)} marked)",
                                           score_label="suspicion (mean rank, 1 = most suspicious)")
    if result.manifest is not None:
        errors = [ids[i] for i in np.flatnonzero(result.manifest.erroneous)]
        figures["groups"] = plot_latent_map(result.latents, folder / "latent_map_groups.png",
                                            colour_by=list(result.manifest.groups), labels=ids, annotate=errors,
                                            legend_title="manifest group",
                                            title="Latent map: manifest groups (erroneous cases marked)")
    if result.probes:
        rows = [f"{row_name(clusters, c)}\nn={int(clusters.sizes[c])}" for c in range(clusters.n_clusters)]
        figures["probes"] = plot_probe_overlays(
            [p.image for p in result.probes],
            [[p.label_maps[c] for p in result.probes] for c in range(clusters.n_clusters)],
            folder / "probe_overlays.png", result.class_names, rows, [p.case_id for p in result.probes],
            spacings=[p.spacing for p in result.probes],
            title="Probe cases segmented by each style centre's UNet")
    return figures


# --------------------------------------------------------------------------- html
def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
           row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(figures: dict[str, Path], name: str, caption: str) -> str:
    if name not in figures:
        return ""
    return (f'<figure><img src="{png_data_uri(figures[name])}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _summary(result: Any) -> str:
    m, c = result.metrics, result.clusters
    ids = result.case_ids
    isolated = int(c.sizes[~c.is_style].sum())
    annotations = describe_annotations(result, c.thresholds.volume, shown=12)
    items = [
        *([f"<b>Note: {_e(m['training']['note'])}.</b>"] if m.get("training", {}).get("note") else []),
        f"{m['n_samples']} training samples, latent dimension {m['latent_dim']}.",
        f"{c.n_styles} annotation style(s), merged from {c.mixture.n_clusters} mixture components whose decoded "
        f"UNets segment alike; {isolated} isolated case(s) segment unlike every style (candidate errors).",
        f"Main mode: {_e(describe_main_mode(c))}; centre "
        f"({', '.join(f'{v:.3g}' for v in c.centers[c.main_cluster])}).",
        *([f"The main mode's own annotations: {_e(annotations)}."] if annotations else []),
        "Most suspicious: " + ", ".join(f"<b>{_e(ids[i])}</b>" for i in result.ranking[:5]) + ".",
    ]
    for k in range(c.n_clusters):
        if k != c.main_cluster:
            items.append(f"{_e(row_name(c, k)).capitalize()} (n={int(c.sizes[k])}): "
                         f"{_e(result.behaviours[k].description)}.")
    if m.get("manifest"):
        if m.get("auroc") is not None:
            items.append(f"Against the manifest: suspicion AUROC {_num(m['auroc'])}, average precision "
                         f"{_num(m['average_precision'])}, {m['erroneous_in_top_k']} of the {m['k']} erroneous "
                         f"cases in the top {m['k']}.")
        items.append(f"Styles vs manifest groups: ARI {_num(m['ari'])}, NMI {_num(m['nmi'])}.")
    return "<ul class=\"summary\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _cluster_section(result: Any) -> str:
    c = result.clusters
    dims = result.latents.shape[1]
    rows, classes = [], []
    for k in range(c.n_clusters):
        consistency = ("" if not c.n_checked[k] else
                       f"{int(round(c.consistency[k] * c.n_checked[k]))} of {int(c.n_checked[k])}")
        members = c.members(k, result.case_ids)
        shown = ", ".join(members[:12]) + (f" and {len(members) - 12} more" if len(members) > 12 else "")
        rows.append([_e(row_name(c, k)), str(int(c.sizes[k])), _e(", ".join(f"{v:.3g}" for v in c.centers[k])),
                     consistency, _e(result.behaviours[k].description), _e(shown)])
        classes.append("main" if k == c.main_cluster else "")
    overview = _table(["style", "size", f"centre (z1..z{dims})", "members segmenting like the centre",
                       "what its UNet does", "members"], rows, {1}, classes)
    names = [b.name for b in next(iter(result.behaviours.values())).classes]
    detail_rows = []
    for k in range(c.n_clusters):
        cells = [_e(row_name(c, k))]
        for b in result.behaviours[k].classes:
            change = "" if not np.isfinite(b.volume_change) else f" ({b.volume_change * 100:+.0f}%)"
            cells.append(f"{b.volume_ml:.1f} ml{change}<br>Dice {b.dice:.2f}")
        detail_rows.append(cells)
    detail = _table(["style", *names], detail_rows, set(), classes)
    probes = ", ".join(_e(p.case_id) for p in result.probes)
    return (overview + f"<p>Per class, pooled over the probe cases ({probes}): mean volume per case under the "
            "style centre's UNet, its change relative to the main mode's UNet, and the Dice overlap between "
            "the two outputs.</p>" + detail)


def _detection_section(result: Any) -> str:
    m = result.metrics
    if not m.get("manifest"):
        return ("<p>No manifest was given, so the ranking is not scored. With a manifest (columns "
                "<code>case_id</code>, <code>group</code>, <code>erroneous</code>) this section compares the "
                "ranking with the known erroneous cases.</p>")
    if m.get("auroc") is None:
        return f"<p>{_e(m.get('detection_note', ''))}.</p>"
    rows = [["<b>suspicion (combined)</b>", _num(m["auroc"]), _num(m["average_precision"]),
             _num(m["precision_at_k"])]]
    for name, values in m["detection_by_signal"].items():
        if values is None:
            rows.append([_e(name), "n/a", "n/a", "n/a"])
        else:
            rows.append([_e(name), _num(values["auroc"]), _num(values["average_precision"]),
                         _num(values["precision_at_k"])])
    groups = ", ".join(f"{_e(g)} {n}" for g, n in m["manifest"]["group_sizes"].items())
    return (f"<p>Manifest <code>{_e(m['manifest']['path'])}</code>: {m['manifest']['n_erroneous']} erroneous "
            f"cases; groups: {groups}. Precision@k uses k = {m['k']} (the number of erroneous cases).</p>"
            + _table(["signal", "AUROC", "average precision", f"precision@{m['k']}"], rows, {1, 2, 3})
            + f"<p>Styles vs groups (isolated cases as one group): ARI {_num(m['ari'])}, NMI {_num(m['nmi'])}; without the erroneous "
            f"cases: ARI {_num(m['ari_without_erroneous'])}, NMI {_num(m['nmi_without_erroneous'])}.</p>")


def _samples_section(result: Any) -> str:

    header = ["rank", "case", "style", "suspicion", *SIGNALS]
    truth = result.manifest
    if truth is not None:
        header += ["group", "erroneous"]
    rows, classes = [], []
    for i in result.ranking:
        row = [str(int(result.rank[i])), _e(result.case_ids[i]), str(int(result.clusters.labels[i])),
               _num(result.suspicion[i]), *[_num(result.signals[s][i]) for s in SIGNALS]]
        if truth is not None:
            row += [_e(truth.groups[i]), "yes" if truth.erroneous[i] else ""]
            classes.append("err" if truth.erroneous[i] else "")
        rows.append(row)
    numeric = {0, 2, *range(3, 4 + len(SIGNALS))}
    return f'<div class="scroll">{_table(header, rows, numeric, classes or None)}</div>'


def _method_section(result: Any) -> str:
    m = result.metrics
    t = m["main_mode"]["thresholds"]
    items = "".join(f"<li><code>{_e(name)}</code>: {_e(text)}</li>" for name, text in _SIGNAL_TEXT.items())
    return (f"<ul>{items}</ul><p>The combined <code>suspicion</code> is the mean, over these six signals, of each "
            "sample's normalised rank (0 = least, 1 = most suspicious; densities are ranked from low to high). "
            "Mixture components holding fewer than "
            f"{m['min_cluster_size']} samples are left out of <code>density_gmm</code> and are not modes for "
            "<code>mode_distance</code>: BIC can grant a few isolated samples a tight component of their own, "
            "which would otherwise make them look dense. The kernel density is leave-one-out with bandwidth "
            f"{m['kde_bandwidth']:.3g} (least-squares cross-validation).</p>"
            f"<p>Styles: the centre of every mixture component is decoded into a UNet that segments the probe cases. "
            f"{_merge_rule(t)}: each "
            f"class's volume within {t['volume']:.0%} and Dice at least {t['dice']:.2f} between the two UNets"
            f"{_scale_words(t)}, no class missing, appearing or swapped.{_annotation_words(t)} Groups of fewer than {m['min_cluster_size']} cases are isolated "
            f"cases, not styles. The main mode is the largest style; it is called the consensus when it holds at "
            f"least {t['consensus_share']:.0%} of all cases, or {t['consensus_ratio']:g} times as many as the next "
            "style and a third of all cases. The words in the style table name classes whose volume changes by 5% or more, whose Dice with "
            "the main mode drops below 0.85, that vanish or appear, or that trade places.</p>"
            "<p>The styles are those of one training's map, and a map can hold two styles together when their "
            "decoded UNets differ little (on the demo, some training seeds place a few dilated-liver cases inside "
            "the clean main mode). To check them, train the dataset again with another seed, audit it, and "
            "compare the two audits case by case: <code>hypersort compare --runs RUN OTHER_RUN</code>.</p>")


def render_report(result: Any, figures: dict[str, Path], run_dir: Path) -> str:
    """The self-contained HTML page of an :class:`~HyperSORTLib.analysis.audit.AnalysisResult`."""
    dims = result.latents.shape[1]
    projection = ("" if dims <= 2 else
                  f"<p>The latent space has {dims} dimensions; the maps show its projection on the first two "
                  "principal axes (axis labels give the share of variance).</p>")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = "/".join(Path(run_dir).resolve().parts[-2:])
    clusters_fig = _figure(figures, "clusters", "Latent map coloured by annotation style; stars are the style centres, "
                                                "isolated cases (not a style) are grey.")
    suspicion_fig = _figure(figures, "suspicion", "Latent map coloured by the combined suspicion; the most "
                                                  "suspicious samples are labelled.")
    groups_fig = _figure(figures, "groups", "Latent map coloured by the manifest group; erroneous cases circled.")
    probes_fig = _figure(figures, "probes", "Probe cases (axial slice with the most foreground, radiological view) "
                                            "segmented by each style centre's UNet.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>HyperSORT audit: {_e(name)}</title><style>{_CSS}</style></head><body>
<h1>HyperSORT audit: {_e(name)}</h1>
<p class="meta">Run <code>{_e(run_dir)}</code> &middot; dataset <code>{_e(result.metrics['dataset'])}</code>
&middot; HyperSORT {_e(__version__)} &middot; {_e(when)}</p>
<h2>Summary</h2>{_summary(result)}
<h2>Latent map</h2>{projection}
{clusters_fig}
{suspicion_fig}
{groups_fig}
<h2>Styles: what each annotation style does</h2>{_cluster_section(result)}
{probes_fig}
<h2>Detection against the manifest</h2>{_detection_section(result)}
<h2>Samples, most suspicious first</h2>{_samples_section(result)}
<h2>How the scores are computed</h2>{_method_section(result)}
</body></html>
"""
