"""Audit of a trained run: which samples look wrong, which annotation styles the dataset mixes.

:func:`analyze_run` reads a run directory and its training cases and writes, into
``RUN_DIR/analysis/`` by default:

``samples.csv``, one row per training sample, in the run's case order:
    ``case_id``; ``z1`` .. ``zD`` (the learned latent); ``cluster`` (its row in ``clusters.csv``:
    its annotation style, or the isolated group it belongs to); ``component`` (the Gaussian-mixture
    component the styles were merged from); ``style_stability`` (with ``stability_seeds``: share of
    the other cases it stays together with, or apart from, when the styles are found again from
    mixtures fitted with other seeds; empty otherwise); ``density_gmm`` (log density under the mixture's large components, higher = more
    typical); ``density_kde`` (leave-one-out log density under a Gaussian kernel density
    estimate, higher = more typical); ``own_loss`` (the sample's last Dice + cross-entropy
    training loss under its own latent, empty when not recorded); ``main_mode_loss`` (its Dice +
    cross-entropy loss under the UNet decoded from the main mode); ``mode_distance`` (Euclidean
    distance in latent units to the nearest large cluster centre); ``knn_score`` (mean distance
    to the k nearest samples over its median, see
    :func:`~HyperSORTLib.latentmap.clusters.outlier_scores`); ``suspicion`` (combined score
    in [0, 1], higher = more suspicious); ``rank`` (1 = most suspicious); ``label_vs_main_<class>``
    (per foreground class, the sample's annotated volume over the volume the main mode's UNet draws
    on its scan: 1.0 alike, 1.2 an annotation 20% larger, 0 an omitted class, ``inf`` a class
    the UNet does not draw, empty when neither has it); with a manifest also
    ``group`` and ``erroneous`` (1/0).
``clusters.csv``, one row per annotation style (largest first), then one per isolated group:
    ``cluster``; ``kind`` (``style``, or ``isolated``: fewer cases than a style, segmenting unlike
    every neighbouring style, candidate errors); ``size``; ``weight`` (share of the cases);
    ``z1`` .. ``zD`` (the centre, whose UNet segments the way the row's cases are annotated);
    ``is_main_mode`` (1 for the largest style); ``consistency`` (share of the checked members whose
    own UNet segments like the centre); ``components`` (mixture components merged into it);
    ``members`` (case ids, space-separated); ``description`` (what the centre's UNet does
    differently from the main mode's on the probe cases, in words). See
    :mod:`HyperSORTLib.analysis.styles` for how components are merged.
``metrics.json``
    counts, clusters, main mode, kernel bandwidth, probe cases, per-cluster behaviour (volumes,
    Dice, missing/appearing/swapped classes); with a manifest also ``ari``/``nmi`` of the
    clusters against the groups and ``auroc``/``average_precision``/``precision_at_k`` of the
    suspicion ranking against the erroneous cases, and the same for every single signal under
    ``detection_by_signal``.
``report.html``
    a self-contained page (inline CSS, images as data URIs) with the summary, latent maps,
    cluster table and probe overlays, and the ranked sample table; the PNGs are also kept in
    ``figures/``.

The combined suspicion is the mean normalised rank over the six signals (see
:func:`~HyperSORTLib.latentmap.scores.combine_signals`), which is robust to a mixture giving
isolated samples tight components of their own (see :mod:`HyperSORTLib.latentmap.scores`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from HyperSORTLib.analysis.annotations import (annotation_offsets, annotations_alike, describe_annotations,
                                               label_vs_main, ratio_words)
from HyperSORTLib.analysis.behaviour import ClusterBehaviour, compare_to_reference
from HyperSORTLib.analysis.styles import (
    StyleResult,
    StyleThresholds,
    describe_main_mode,
    find_styles,
    fine_partition,
    row_name,
    split_by_annotations,
    style_stability,
    style_summary,
)
from HyperSORTLib.analysis.inputs import (
    PatchCase,
    check_probe_ids,
    nearest_cases,
    resolve_case_list,
    training_patches,
)
from HyperSORTLib.data.manifest import MANIFEST_FILE, Manifest, read_manifest
from HyperSORTLib.latentmap.clusters import ClusterResult, cluster_latents, outlier_scores, score_clusters
from HyperSORTLib.latentmap.scores import (
    HIGHER_IS_SUSPICIOUS,
    SIGNALS,
    combine_signals,
    default_min_cluster_size,
    detection_by_signal,
    kde_log_density,
    large_clusters,
    mixture_log_density,
    mode_distances,
)
from HyperSORTLib import rundir
from HyperSORTLib.rundir import read_latents_table
from HyperSORTLib.utils.io import atomic_write_json, atomic_write_text, csv_text

__all__ = ["AnalysisResult", "ProbeCase", "SIGNALS", "HIGHER_IS_SUSPICIOUS", "analyze_run"]



@dataclass
class ProbeCase:
    """A preprocessed probe case and the label map each cluster's UNet gives it."""

    case_id: str
    image: np.ndarray
    voxel_ml: float
    spacing: tuple[float, ...]
    label_maps: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class AnalysisResult:
    """Everything :func:`analyze_run` computed and where it wrote it.

    Attributes:
        out_dir: the output folder.
        case_ids: training case ids, in the run's (latent-table) order.
        latents: latent table ``[N, D]``.
        clusters: the annotation styles (and isolated groups) merged from the mixture.
        large: mask of the mixture components counted as modes (used by the density signals).
        signals: ``name -> [N]`` for every name in :data:`SIGNALS`.
        suspicion: combined score ``[N]`` in [0, 1].
        rank: 1 = most suspicious ``[N]``.
        behaviours: ``cluster -> ClusterBehaviour`` against the main mode.
        probes: the probe cases with the label map of every cluster's centre.
        manifest: the ground truth, when given.
        metrics: the content of ``metrics.json``.
        stability: per case, how often it keeps its style company over other mixture fits
            (NaN when not measured).
        density_mixture: the BIC-chosen mixture the density signals use (``large`` refers to it).
        label_vs_main: ``[N, C - 1]``, each case's annotated volume of every foreground class over
            the volume the main mode's UNet draws on its scan (:func:`~HyperSORTLib.analysis.annotations.label_vs_main`).
        annotation_offsets: ``[N, C - 1]``, the same in log volume with that UNet's trend with organ
            size removed (:func:`~HyperSORTLib.analysis.annotations.annotation_offsets`).
        by_annotation: the styles found in the main mode by their members' annotations: row ->
            (class column, the members' median ratio to the mode's usual annotation)
            (:func:`~HyperSORTLib.analysis.styles.split_by_annotations`).
    """

    out_dir: Path
    case_ids: tuple[str, ...]
    latents: np.ndarray
    clusters: StyleResult
    large: np.ndarray
    signals: dict[str, np.ndarray]
    suspicion: np.ndarray
    rank: np.ndarray
    behaviours: dict[int, ClusterBehaviour]
    probes: list[ProbeCase]
    manifest: Manifest | None
    metrics: dict[str, Any]
    class_names: tuple[str, ...] = ()
    stability: np.ndarray | None = None
    density_mixture: ClusterResult | None = None
    label_vs_main: np.ndarray | None = None
    annotation_offsets: np.ndarray | None = None
    by_annotation: dict[int, tuple[int, float]] = field(default_factory=dict)

    @property
    def mixture(self) -> ClusterResult:
        """The fine partition (Gaussian mixture) the styles were merged from."""
        return self.clusters.mixture

    @property
    def report_path(self) -> Path:
        return self.out_dir / rundir.REPORT_FILE

    @property
    def samples_path(self) -> Path:
        return self.out_dir / rundir.SAMPLES_FILE

    @property
    def clusters_path(self) -> Path:
        return self.out_dir / rundir.CLUSTERS_FILE

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / rundir.METRICS_FILE

    @property
    def ranking(self) -> np.ndarray:
        """Sample indices, most suspicious first."""
        return np.argsort(self.rank, kind="stable")

    def summary(self) -> str:
        """A few lines for the terminal."""
        m = self.metrics
        top = ", ".join(self.case_ids[i] for i in self.ranking[:5])
        styles = self.clusters
        isolated = int(styles.sizes[~styles.is_style].sum())
        annotations = describe_annotations(self, styles.thresholds.volume)
        lines = [f"HyperSORT analysis of {m['n_samples']} samples: {styles.n_styles} annotation style(s), "
                 f"{isolated} isolated case(s)",
                 f"  main mode: {describe_main_mode(styles)}",
                 *([f"  main mode's annotations: {annotations}"] if annotations else []),
                 f"  most suspicious: {top}"]
        for c, behaviour in sorted(self.behaviours.items()):
            if c != styles.main_cluster:
                lines.append(f"  {row_name(styles, c)} (n={int(styles.sizes[c])}): {behaviour.description}")
        if m.get("auroc") is not None:
            lines.append(f"  vs manifest: AUROC {m['auroc']:.3f}  AP {m['average_precision']:.3f}  "
                         f"precision@{m['k']} {m['precision_at_k']:.3f}")
        if m.get("ari") is not None:
            lines.append(f"  styles vs groups: ARI {m['ari']:.3f}  NMI {m['nmi']:.3f}")
        if m.get("training", {}).get("note"):
            lines.append(f"  note: {m['training']['note']}")
        lines.append(f"  report: {self.report_path}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the audit
def analyze_run(run_dir: str | Path, out_dir: str | Path | None = None, manifest: str | Path | None = None,
                probe_cases: Sequence[str] | str | None = None, data: str | Path | None = None,
                device: str = "auto", n_probes: int = 3, max_components: int = 8, seed: int | None = None,
                stability_seeds: int = 0, linkage: str = StyleThresholds.linkage,
                small_components: str = StyleThresholds.small_components,
                volume_scale: str = StyleThresholds.volume_scale,
                annotations: str = StyleThresholds.annotations,
                min_cluster_size: int | None = None, cache_dir: str | Path | None = None, use_cache: bool = True,
                progress: bool = False, overwrite: bool = False, accept_data_change: bool = False) -> AnalysisResult:
    """Audit a trained run and write ``samples.csv``, ``clusters.csv``, ``metrics.json`` and ``report.html``.

    Args:
        run_dir: the run directory (``config.json``, ``model.safetensors``, ``latents.csv``).
        out_dir: output folder; default ``RUN_DIR/analysis``.
        manifest: ground-truth CSV (``case_id``, ``group``, ``erroneous``); default
            ``<dataset>/manifest.csv`` when that file exists.
        probe_cases: training case ids (list or comma-separated string) to segment with every
            cluster's UNet; default the ``n_probes`` cases nearest the main mode.
        data: the dataset folder, when it is no longer where ``config.json`` says.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        n_probes: number of default probe cases.
        max_components: largest number of mixture components tried (chosen by BIC).
        seed: random state of the mixture fit; default the run's training seed.
        stability_seeds: find the styles again from this many other mixture fits (seeds
            ``seed + 1 ..``) and report, per case, how often it keeps its style company
            (``style_stability`` in ``samples.csv``); 0 skips it.
        linkage: how mixture components are merged into styles, ``"complete"`` or ``"average"``
            (:class:`~HyperSORTLib.analysis.styles.StyleThresholds`).
        small_components: ``"attach"``: style-sized components merge first, and smaller ones
            then join the style of their nearest alike neighbour; ``"merge"``: all on the same
            terms (:class:`~HyperSORTLib.analysis.styles.StyleThresholds`).
        volume_scale: ``"typical"``: a class that two decoded UNets both draw at under half its
            usual volume across the map is compared against that volume; ``"pair"``: against the
            two volumes alone (:class:`~HyperSORTLib.analysis.styles.StyleThresholds`).
        annotations: ``"split"``: the main mode's members whose annotations differ from its usual
            member's the same way (one class, one direction), at least a style's size of them, become a
            style of their own (:func:`~HyperSORTLib.analysis.styles.split_by_annotations`);
            ``"members"``: that, and parts of the map whose members annotate a class differently
            (each annotation against the UNet of the fine partition's heaviest component, that
            UNet's size trend removed) are not merged; ``"ignore"``: the decoded UNets alone decide
            (:class:`~HyperSORTLib.analysis.styles.StyleThresholds`).
        min_cluster_size: smallest cluster counted as a mode; default ``max(3, ceil(2% of N))``.
        cache_dir: preprocessing cache that training filled (read only); default the user cache
            folder (``$HYPERSORT_CACHE_DIR``).
        use_cache: ``False`` preprocesses every case from its files.
        progress: show progress bars.
        overwrite: replace analysis files in a given ``out_dir`` that ``hypersort analyze`` did not
            write (without it they are an error; an earlier analysis, and ``RUN_DIR/analysis``, are
            always replaced).
        accept_data_change: analyse on a dataset whose files under the run's case ids differ from
            those the run was trained on.

    Returns:
        An :class:`AnalysisResult`.

    Raises:
        RunDirectoryError: the run directory is incomplete or from another format version.
        FileNotFoundError: the dataset or the manifest is missing (the message says to pass ``--data``).
        ValueError: a manifest without the needed columns or cases, unknown probe ids, too few samples.

    Example:
        >>> result = analyze_run("runs/demo", manifest="demo_out/cohort/manifest.csv")  # doctest: +SKIP
        >>> print(result.summary())  # doctest: +SKIP
    """
    from HyperSORTLib.inference import TrainedRun
    start = time.perf_counter()
    if isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes must be an integer >= 1; found {n_probes!r}")
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else rundir.analysis_dir(run_dir)
    config, case_ids, doc = rundir.read_run_config(run_dir)
    if out_dir is not None:  # RUN_DIR/analysis belongs to hypersort analyze; another folder may hold user files
        rundir.check_analysis_output(out, overwrite)
    if len(case_ids) < 3:
        raise ValueError(f"{run_dir} was trained on {len(case_ids)} case(s); an analysis needs at least 3.")
    _, own_loss = read_latents_table(run_dir, case_ids)
    given_probes = check_probe_ids(probe_cases, case_ids)  # every input is checked before heavy work
    case_list, data_path = resolve_case_list(run_dir, doc, case_ids, data, accept_data_change)
    weights_before = rundir.weights_digest(run_dir)
    truth = _load_manifest(manifest, data_path, case_ids)

    run = TrainedRun.load(run_dir, device=device)
    if rundir.weights_digest(run_dir) != weights_before:
        raise rundir.RunDirectoryError(f"{run_dir / rundir.MODEL_FILE} changed while it was being loaded (is "
                                       f"training still running?); re-run hypersort analyze when it has finished.")
    class_names = tuple(run.class_names)
    if len(case_list.class_names) != len(class_names):
        raise ValueError(f"The dataset {data_path} has {len(case_list.class_names)} classes "
                         f"({', '.join(case_list.class_names)}) but the run was trained on {len(class_names)} "
                         f"({', '.join(class_names)}).")
    latents = run.latents.astype(np.float64)
    mixture_seed = config.train.seed if seed is None else seed
    mixture = cluster_latents(latents, max_components=max_components, seed=mixture_seed)
    large = large_clusters(mixture, min_cluster_size)
    probe_ids = given_probes or default_probe_ids(case_ids, latents, mixture, n_probes)
    cache = None
    if use_cache:
        from HyperSORTLib.data.cache import PreprocessCache

        cache = PreprocessCache(cache_dir)
    probes = [ProbeCase(p.case_id, p.image, p.voxel_ml, p.spacing)
              for p in training_patches(case_list, run.config.data, cache, only=probe_ids)]
    min_style = min_cluster_size or default_min_cluster_size(len(case_ids))
    thresholds = StyleThresholds(linkage=linkage, small_components=small_components, volume_scale=volume_scale,
                                 annotations=annotations)
    fine = fine_partition(latents, mixture_seed)
    reference, reference_pass, offsets = None, None, None
    if annotations == "members":
        # Every annotation against the UNet of the map's heaviest part; the main mode's UNet is
        # almost always that one, and the pass is then not repeated.
        reference = fine.centers[fine.main_cluster]
        reference_pass = _segment_cases(run, case_list, reference, cache, progress)
        offsets = annotation_offsets(label_vs_main(*reference_pass[1:]), reference_pass[2])
    clusters = _find_styles(run, latents, fine, probes, class_names, min_style, mixture_seed, progress, thresholds,
                            offsets)
    stability = _stability(run, latents, clusters, probes, class_names, mixture_seed,
                           stability_seeds, progress, offsets)
    main = clusters.main_cluster
    main_pass = (reference_pass if reference is not None and np.array_equal(clusters.centers[main], reference)
                 else _segment_cases(run, case_list, clusters.centers[main], cache, progress))
    main_loss, annotated = main_pass[0], label_vs_main(*main_pass[1:])
    offsets_main = annotation_offsets(annotated, main_pass[2])
    by_annotation: dict[int, tuple[int, float]] = {}
    if annotations != "ignore":
        clusters, by_annotation = _split_by_annotations(run, clusters, latents, annotated, offsets_main, probes)
        main = clusters.main_cluster
    latent_signals, kde_bandwidth = _latent_signals(latents, mixture, large)
    measured = {**latent_signals, "own_loss": own_loss, "main_mode_loss": main_loss}
    signals = {name: np.asarray(measured[name], dtype=np.float64) for name in SIGNALS}
    suspicion = combine_signals(signals, HIGHER_IS_SUSPICIOUS)
    rank = np.empty(len(case_ids), dtype=np.int64)
    rank[np.argsort(-suspicion, kind="stable")] = np.arange(1, len(case_ids) + 1)

    behaviours = {c: compare_to_reference([p.label_maps[main] for p in probes], [p.label_maps[c] for p in probes],
                                          [p.voxel_ml for p in probes], class_names)
                  for c in range(clusters.n_clusters)}
    for row, (k, relative) in by_annotation.items():
        behaviours[row] = dataclasses.replace(behaviours[row], description=(
            f"annotated with the {class_names[k + 1].replace('_', ' ')} {ratio_words(relative, 'the main mode')} "
            f"(found by its members' own annotations: the map holds these cases inside the main mode); its UNet: "
            f"{behaviours[row].description}"))
    result = AnalysisResult(out, tuple(case_ids), latents, clusters, large, signals, suspicion, rank, behaviours,
                            probes, truth, {}, class_names, stability, mixture, annotated, offsets_main,
                            by_annotation)
    result.metrics = _metrics(result, run_dir, data_path, kde_bandwidth,
                              min_cluster_size or default_min_cluster_size(len(case_ids)))
    result.metrics["seeds"] = {"training": int(config.train.seed), "mixture": int(mixture_seed),
                               "stability_refits": int(stability_seeds)}
    result.metrics["provenance"] = rundir.analysis_provenance(run_dir, weights_before)
    result.metrics["training"] = training_state(result.metrics["provenance"]["epoch"], config.train.epochs)
    _write_outputs(result, run_dir, start)
    return result


def default_probe_ids(case_ids: Sequence[str], latents: np.ndarray, mixture: ClusterResult, n_probes: int) -> list[str]:
    """The probe cases the audit segments when none are given: the ``n_probes`` members of the
    mixture's heaviest component nearest its centre."""
    heaviest = mixture.main_cluster
    return nearest_cases(case_ids, latents, mixture.centers[heaviest], mixture.labels == heaviest, n_probes)


def training_state(epoch: int | None, epochs: int) -> dict[str, Any]:
    """Whether the audited weights are the end of the configured training, with a note when not
    (for ``metrics.json``, the terminal and the report).

    Example:
        >>> training_state(30, 60)["note"]
        'the weights are from epoch 30 of the 60 configured: training has not finished (still running, stopped or killed); the audit describes that state, re-run it when training has finished'
    """
    finished = epoch is None or epoch >= epochs
    state: dict[str, Any] = {"epoch": epoch, "epochs": int(epochs), "finished": bool(finished)}
    if not finished:
        state["note"] = (f"the weights are from epoch {epoch} of the {epochs} configured: training has not finished "
                         "(still running, stopped or killed); the audit describes that state, re-run it when training "
                         "has finished")
    return state


def _annotation_summary(result: AnalysisResult, volume: float) -> dict[str, Any]:
    """The main mode's members' annotations against its UNet (for ``metrics.json``)."""
    if result.label_vs_main is None:
        return {}
    alike, unlike = annotations_alike(result, volume)
    return {"annotations_alike": alike, "annotations_unlike": [
        {"case_id": case, "class": name, "label_vs_main": value if np.isfinite(value) else None}
        for case, name, value in unlike]}


def _stability_summary(result: AnalysisResult) -> dict[str, Any] | None:
    values = result.stability
    if values is None or not np.isfinite(values).any():
        return None
    order = np.argsort(values, kind="stable")
    return {"mean": float(np.nanmean(values)), "min": float(np.nanmin(values)),
            "least_stable": [{"case_id": result.case_ids[i], "stability": float(values[i])} for i in order[:5]]}


def style_labels(styles: StyleResult) -> np.ndarray:
    """Each sample's style, with every isolated case under one label (``n_styles``): isolated cases
    are not a style, so scoring against known groups treats them as one "not a style" group."""
    return np.where(styles.is_style[styles.labels], styles.labels, styles.n_styles)


def _load_manifest(manifest: str | Path | None, data_path: Path, case_ids: Sequence[str]) -> Manifest | None:
    if manifest is not None:
        return read_manifest(manifest, case_ids)
    folder = data_path if data_path.is_dir() else data_path.parent
    default = folder / MANIFEST_FILE
    return read_manifest(default, case_ids) if default.is_file() else None


def _latent_signals(latents: np.ndarray, clusters: ClusterResult,
                    large: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    """The four signals computed from the latent table alone, and the kernel bandwidth used."""
    density_kde, bandwidth = kde_log_density(latents)
    return {"density_gmm": mixture_log_density(latents, clusters, large), "density_kde": density_kde,
            "mode_distance": mode_distances(latents, clusters.centers[large]),
            "knn_score": outlier_scores(latents)}, bandwidth


@torch.no_grad()
def _segment_cases(run: Any, case_list: Any, centre: np.ndarray, cache: Any,
                   progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every case's Dice + CE loss under the UNet decoded at ``centre``, and per foreground class the
    voxels its annotation holds and the voxels that UNet draws on the same scan (``[N, C - 1]`` each).

    Cases stream through one at a time and are batched ``train.batch_size`` at a time for the
    UNet, so memory does not grow with the dataset.
    """
    from HyperSORTLib.training.losses import DiceCELoss

    train = run.config.train
    loss_fn = DiceCELoss.from_config(train)
    z = np.asarray(centre, dtype=np.float32)
    n_classes = len(run.class_names)
    losses = np.full(len(case_list.cases), np.nan)
    labelled = np.zeros((len(case_list.cases), n_classes))
    drawn = np.zeros((len(case_list.cases), n_classes))
    batch: list[PatchCase] = []

    def flush() -> None:
        image = torch.from_numpy(np.stack([p.image for p in batch]))[:, None]
        label = torch.from_numpy(np.stack([p.label for p in batch]).astype(np.int64))[:, None]
        logits = run.predict_logits(image, z)
        index = [p.index for p in batch]
        losses[index] = loss_fn(logits, label.to(logits.device)).total.cpu().numpy()
        predicted = logits.argmax(dim=1).flatten(1).cpu()
        for row, case, p in zip(predicted, index, batch):
            drawn[case] = torch.bincount(row, minlength=n_classes)[:n_classes].numpy()
            labelled[case] = np.bincount(p.label.ravel().astype(np.int64), minlength=n_classes)[:n_classes]
        batch.clear()

    for patch in training_patches(case_list, run.config.data, cache, progress):
        if batch and patch.image.shape != batch[0].image.shape:
            flush()
        batch.append(patch)
        if len(batch) >= max(1, train.batch_size):
            flush()
    if batch:
        flush()
    return losses, labelled[:, 1:], drawn[:, 1:]


@torch.no_grad()
def _stability(run: Any, latents: np.ndarray, styles: StyleResult, probes: list[ProbeCase], class_names: Sequence[str],
               seed: int, n_seeds: int, progress: bool, offsets: np.ndarray | None = None) -> np.ndarray:
    """Per case, how often it keeps its style company when the mixture is fitted with other seeds."""
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 0:
        raise ValueError(f"stability_seeds must be an integer >= 0; found {n_seeds!r}")
    voxel_ml = [p.voxel_ml for p in probes]
    quick = dataclasses.replace(styles.thresholds, max_members=0)

    decode = _probe_decoder(run, probes)

    def refit(other: int) -> StyleResult:
        return find_styles(latents, fine_partition(latents, other), decode, voxel_ml, class_names,
                           styles.min_style_size, quick, other, offsets=offsets)[0]

    seeds = [seed + 1 + k for k in range(n_seeds)]
    if progress and seeds:
        from tqdm.auto import tqdm

        seeds = list(tqdm(seeds, desc="style stability", unit="refit"))
    return style_stability(latents, styles, refit, seeds)


def _probe_decoder(run: Any, probes: list[ProbeCase], bar: Any = None) -> Any:
    """Latent point -> the probe cases' label maps under its UNet (one tick of ``bar`` per point)."""
    def decode(z: np.ndarray) -> list[np.ndarray]:
        point = np.asarray(z, dtype=np.float32)
        maps = [run.segment(p.image, point) for p in probes]
        if bar is not None:
            bar.update(1)
        return maps

    return decode


@torch.no_grad()
def _split_by_annotations(run: Any, styles: StyleResult, latents: np.ndarray, ratios: np.ndarray, offsets: np.ndarray,
                          probes: list[ProbeCase]) -> tuple[StyleResult, dict[int, tuple[int, float]]]:
    """:func:`~HyperSORTLib.analysis.styles.split_by_annotations`, with the probes' label maps moved to
    the rows' new places and the new styles' centres decoded on them."""
    split, found, before = split_by_annotations(styles, latents, ratios, offsets)
    if split is styles:  # nothing split off, nothing returned
        return styles, {}
    decode = _probe_decoder(run, probes)
    for probe in probes:
        old = dict(probe.label_maps)
        probe.label_maps.clear()
        probe.label_maps.update({row: old[was] for row, was in enumerate(before) if was >= 0})
    for row in found:
        for probe, label_map in zip(probes, decode(split.centers[row])):
            probe.label_maps[row] = label_map
    return split, found


@torch.no_grad()
def _find_styles(run: Any, latents: np.ndarray, mixture: ClusterResult, probes: list[ProbeCase],
                 class_names: Sequence[str], min_style_size: int, seed: int, progress: bool,
                 thresholds: StyleThresholds, offsets: np.ndarray | None = None) -> StyleResult:
    """Decode every mixture component's centre on the probes, merge them into styles, and keep the
    label map of every style's (and isolated group's) centre on the probe cases."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="decoding the latent map", unit="UNet")
    try:
        styles, row_maps = find_styles(latents, mixture, _probe_decoder(run, probes, bar),
                                       [p.voxel_ml for p in probes], class_names,
                                       min_style_size, thresholds, seed, offsets=offsets)
    finally:
        if bar is not None:
            bar.close()
    for row, maps in enumerate(row_maps):
        for probe, label_map in zip(probes, maps):
            probe.label_maps[row] = label_map
    return styles


# --------------------------------------------------------------------------- metrics
def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values).ravel()]


def _metrics(result: AnalysisResult, run_dir: Path, data_path: Path, bandwidth: float,
             min_cluster_size: int) -> dict[str, Any]:
    clusters, main = result.clusters, result.clusters.main_cluster
    mixture, density = result.mixture, result.density_mixture
    metrics: dict[str, Any] = {
        "run_dir": str(run_dir), "dataset": str(data_path),
        "n_samples": len(result.case_ids), "latent_dim": int(result.latents.shape[1]),
        "n_clusters": int(clusters.n_clusters), "n_styles": int(clusters.n_styles),
        "min_cluster_size": int(min_cluster_size),
        "cluster_sizes": [int(s) for s in clusters.sizes],
        "main_mode": {"cluster": int(main), "centre": _floats(clusters.centers[main]),
                      "weight": float(clusters.weights[main]), "size": int(clusters.sizes[main]),
                      **style_summary(clusters), **_annotation_summary(result, clusters.thresholds.volume)},
        "fine_partition": {"n_components": int(mixture.n_clusters),
                           "component_sizes": [int(s) for s in mixture.sizes]},
        "density_mixture": None if density is None else {
            "n_components": int(density.n_clusters), "n_large_components": int(result.large.sum()),
            "component_sizes": [int(s) for s in density.sizes],
            "bic_by_n_components": {str(k): float(v) for k, v in density.mixture.bic_by_n_components_.items()}},
        "kde_bandwidth": float(bandwidth),
        "suspicion": {"method": "mean normalised rank over the signals", "signals": list(SIGNALS),
                      "higher_is_suspicious": dict(HIGHER_IS_SUSPICIOUS)},
        "top_suspicious": [result.case_ids[i] for i in result.ranking[:10]],
        "style_stability": _stability_summary(result),
        "probe_cases": [p.case_id for p in result.probes],
        "clusters": [{"cluster": c, "kind": "style" if clusters.is_style[c] else "isolated",
                      "size": int(clusters.sizes[c]), "weight": float(clusters.weights[c]),
                      "centre": _floats(clusters.centers[c]), "is_main_mode": c == main,
                      "components": list(clusters.components[c]),
                      "consistency": None if not np.isfinite(clusters.consistency[c]) else
                      float(clusters.consistency[c]), "members_checked": int(clusters.n_checked[c]),
                      "members": clusters.members(c, result.case_ids), **result.behaviours[c].as_dict()}
                     for c in range(clusters.n_clusters)],
        "manifest": None,
    }
    truth = result.manifest
    if truth is None:
        return metrics
    errors = truth.erroneous
    metrics["manifest"] = {"path": str(truth.path), "n_erroneous": int(errors.sum()),
                           "group_sizes": truth.group_sizes()}
    groups = np.asarray(truth.groups)
    found = style_labels(clusters)
    agreement = score_clusters(found, groups)
    clean = ~errors
    clean_agreement = score_clusters(found[clean], groups[clean]) if clean.sum() >= 2 else None
    metrics.update({"ari": agreement["ari"], "nmi": agreement["nmi"],
                    "ari_note": "styles against the manifest groups; the isolated cases count as one group",
                    "mixture_ari": score_clusters(mixture.labels, groups)["ari"],
                    "ari_without_erroneous": None if clean_agreement is None else clean_agreement["ari"],
                    "nmi_without_erroneous": None if clean_agreement is None else clean_agreement["nmi"]})
    all_signals = {"suspicion": result.suspicion, **result.signals}
    detection = detection_by_signal(all_signals, {"suspicion": True, **HIGHER_IS_SUSPICIOUS}, errors)
    combined = detection.pop("suspicion")
    metrics.update(combined or {"auroc": None, "average_precision": None, "precision_at_k": None, "k": None})
    metrics.pop("n", None)
    if combined is not None:
        top = result.ranking[: combined["k"]]
        metrics["erroneous_in_top_k"] = int(errors[top].sum())
    metrics["detection_by_signal"] = detection
    if combined is None:
        metrics["detection_note"] = ("the manifest marks no case (or every case) as erroneous, so detection "
                                     "metrics are undefined")
    return metrics


# --------------------------------------------------------------------------- outputs
def _fmt(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6g}"


def samples_table(result: AnalysisResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of ``samples.csv`` (run order)."""
    dims = result.latents.shape[1]
    header = ["case_id", *[f"z{i + 1}" for i in range(dims)], "cluster", "component", "style_stability",
              *SIGNALS, "suspicion", "rank"]
    ratios = result.label_vs_main
    if ratios is not None:
        header += [f"label_vs_main_{name}" for name in result.class_names[1:]]
    if result.manifest is not None:
        header += ["group", "erroneous"]
    rows = []
    stability = result.stability if result.stability is not None else np.full(len(result.case_ids), np.nan)
    for i, case_id in enumerate(result.case_ids):
        row = [case_id, *[f"{v:.8g}" for v in result.latents[i]], str(int(result.clusters.labels[i])),
               str(int(result.mixture.labels[i])), _fmt(stability[i]),
               *[_fmt(result.signals[name][i]) for name in SIGNALS], f"{result.suspicion[i]:.6g}",
               str(int(result.rank[i]))]
        if ratios is not None:
            row += [_fmt(v) if not np.isposinf(v) else "inf" for v in ratios[i]]
        if result.manifest is not None:
            row += [result.manifest.groups[i], str(int(result.manifest.erroneous[i]))]
        rows.append(row)
    return header, rows


def clusters_table(result: AnalysisResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of ``clusters.csv``: the styles, largest first, then the isolated groups."""
    c = result.clusters
    header = ["cluster", "kind", "size", "weight", *[f"z{i + 1}" for i in range(result.latents.shape[1])],
              "is_main_mode", "consistency", "components", "members", "description"]
    rows = [[str(k), "style" if c.is_style[k] else "isolated", str(int(c.sizes[k])), f"{c.weights[k]:.6g}",
             *[f"{v:.8g}" for v in c.centers[k]], str(int(k == c.main_cluster)), _fmt(c.consistency[k]),
             " ".join(map(str, c.components[k])), " ".join(c.members(k, result.case_ids)),
             result.behaviours[k].description] for k in range(c.n_clusters)]
    return header, rows


def _json_safe(value: Any) -> Any:
    """``value`` with NaN/inf replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_outputs(result: AnalysisResult, run_dir: Path, start: float) -> None:
    from HyperSORTLib.analysis.report import render_figures, render_report

    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    figures = render_figures(result, out / rundir.FIGURES_DIR)
    result.metrics["wall_time_s"] = round(time.perf_counter() - start, 2)
    atomic_write_text(result.samples_path, csv_text(*samples_table(result)))
    atomic_write_text(result.clusters_path, csv_text(*clusters_table(result)))
    atomic_write_json(result.metrics_path, _json_safe(result.metrics))
    atomic_write_text(result.report_path, render_report(result, figures, run_dir))
    # Written last: it marks the analysis complete and says which weights it describes.
    atomic_write_json(out / rundir.PROVENANCE_FILE, result.metrics["provenance"])
