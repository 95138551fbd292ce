"""The audit's style rules side by side on trained maps: which rule finds the true groups.

For every trained run given, the latent map is read the way ``hypersort analyze`` reads it (the
same mixture seed, probe cases and fine partition), every mixture component's centre is decoded
once, and the styles are then merged from those decoded centres under each rule: the default
:class:`~HyperSORTLib.analysis.styles.StyleThresholds` with one setting changed at a time
(``volume_scale``, ``linkage``, ``small_components``, ``annotations``; each rule but
``annotations=ignore`` then splits the main mode by its members' annotations, as ``hypersort analyze``
does), and the default thresholds on
a fine partition of the same number of components with round (spherical) covariances instead of full
ones. Only the merge differs between the rules,
so the comparison isolates it from training. The members' consistency check is skipped (it does
not change the styles).

Prints one markdown row per map: for every rule, the ARI of the styles against the manifest's
groups (the isolated cases counted as one group, as ``hypersort analyze`` scores them) and
the main mode's make-up; then the mean ARI per rule and on how many maps each rule is
the best. Maps are given as ``RUN=MANIFEST`` (a run directory written by ``hypersort train`` or
``hypersort demo``, and the ground-truth CSV of its dataset), or as a folder written by
``benchmarks/demo_figures.py``, whose ``seed_*`` runs and cohort manifest are found by themselves.

    python benchmarks/style_rules.py /tmp/demo_figures /tmp/semireal runs/mine=data/manifest.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from HyperSORTLib import rundir  # noqa: E402
from HyperSORTLib.analysis.annotations import annotation_offsets, label_vs_main  # noqa: E402
from HyperSORTLib.analysis.audit import (ProbeCase, _probe_decoder, _segment_cases, default_probe_ids,  # noqa: E402
                                         style_labels)
from HyperSORTLib.analysis.inputs import resolve_case_list, training_patches  # noqa: E402
from HyperSORTLib.analysis.styles import (StyleThresholds, find_styles, fine_partition,  # noqa: E402
                                         split_by_annotations)
from HyperSORTLib.config import (STYLE_ANNOTATIONS, STYLE_LINKAGES, STYLE_SMALL_COMPONENTS,  # noqa: E402
                                 STYLE_VOLUME_SCALES)
from HyperSORTLib.data.cache import PreprocessCache  # noqa: E402
from HyperSORTLib.latentmap.clusters import cluster_latents  # noqa: E402
from HyperSORTLib.latentmap.scores import default_min_cluster_size  # noqa: E402

DEFAULT = StyleThresholds(max_members=0)
#: The default rule, then each alternative setting alone.
RULES = {"default": DEFAULT,
         **{f"volume_scale={v}": dataclasses.replace(DEFAULT, volume_scale=v) for v in STYLE_VOLUME_SCALES[1:]},
         **{f"linkage={v}": dataclasses.replace(DEFAULT, linkage=v) for v in STYLE_LINKAGES[1:]},
         **{f"small_components={v}": dataclasses.replace(DEFAULT, small_components=v)
            for v in STYLE_SMALL_COMPONENTS[1:]},
         **{f"annotations={v}": dataclasses.replace(DEFAULT, annotations=v) for v in STYLE_ANNOTATIONS[1:]}}


#: The default thresholds on a fine partition with spherical components.
ROUND_PARTITION = "fine partition spherical"


def find_maps(arguments: list[str]) -> list[tuple[Path, Path]]:
    """``(run directory, manifest)`` for every argument (see the module docstring)."""
    maps = []
    for argument in arguments:
        if "=" in argument:
            run, manifest = argument.split("=", 1)
            maps.append((Path(run), Path(manifest)))
            continue
        folder = Path(argument)
        for seed_dir in sorted(folder.glob("seed_*")):
            run = seed_dir / "run" if (seed_dir / "run").is_dir() else seed_dir
            manifest = next((m for m in (seed_dir / "cohort" / "manifest.csv", folder / "cohort" / "manifest.csv")
                             if m.is_file()), None)
            if manifest is None:
                raise SystemExit(f"{seed_dir}: no cohort/manifest.csv beside the run or in {folder}")
            maps.append((run, manifest))
        if not any(m[0].is_relative_to(folder) for m in maps):
            raise SystemExit(f"{folder}: no seed_* runs written by benchmarks/demo_figures.py, and no RUN=MANIFEST")
    return maps


def compare_rules(run_dir: Path, manifest: Path, device: str = "cpu") -> dict[str, tuple[float, str]]:
    """Rule name -> (ARI against the manifest's groups, the main mode's make-up) on one map."""
    from HyperSORTLib.inference import TrainedRun

    config, case_ids, doc = rundir.read_run_config(run_dir)
    case_list, _ = resolve_case_list(run_dir, doc, case_ids, None, False)
    groups = {row["case_id"]: row["group"] for row in csv.DictReader(open(manifest, newline=""))}
    truth = [groups[c] for c in case_ids]
    run = TrainedRun.load(run_dir, device=device)
    latents = run.latents.astype(np.float64)
    seed = config.train.seed
    mixture = cluster_latents(latents, max_components=8, seed=seed)  # as hypersort analyze's defaults
    probe_ids = default_probe_ids(case_ids, latents, mixture, 3)
    probes = [ProbeCase(p.case_id, p.image, p.voxel_ml, p.spacing)
              for p in training_patches(case_list, run.config.data, PreprocessCache(None), only=probe_ids)]
    fine = fine_partition(latents, seed)
    decode = _probe_decoder(run, probes)
    with torch.no_grad():
        maps = [decode(fine.centers[c]) for c in range(fine.n_clusters)]
    voxel_ml = [p.voxel_ml for p in probes]
    passes: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def against(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every annotation against the UNet at ``centre``: (label_vs_main, annotation offsets)."""
        key = np.asarray(centre, dtype=np.float64).tobytes()
        if key not in passes:
            _, labelled, drawn = _segment_cases(run, case_list, centre, PreprocessCache(None), False)
            ratios = label_vs_main(labelled, drawn)
            passes[key] = ratios, annotation_offsets(ratios, drawn)
        return passes[key]

    offsets = against(fine.centers[fine.main_cluster])[1]
    min_style = default_min_cluster_size(len(case_ids))
    round_fine = cluster_latents(latents, max_components=fine.n_clusters, min_components=fine.n_clusters, seed=seed,
                                 covariance_type="spherical")
    with torch.no_grad():
        round_maps = [decode(round_fine.centers[c]) for c in range(round_fine.n_clusters)]
    out = {}
    for name, (partition, partition_maps, thresholds) in {
            **{name: (fine, maps, thresholds) for name, thresholds in RULES.items()},
            ROUND_PARTITION: (round_fine, round_maps, DEFAULT)}.items():
        styles, _ = find_styles(latents, partition, decode, voxel_ml, tuple(run.class_names), min_style, thresholds,
                                seed, component_maps=partition_maps, offsets=offsets)
        if thresholds.annotations != "ignore":  # as hypersort analyze: against the main mode's UNet
            styles = split_by_annotations(styles, latents, *against(styles.centers[styles.main_cluster]))[0]
        main = Counter(t for t, row in zip(truth, styles.labels) if row == styles.main_cluster)
        out[name] = (float(adjusted_rand_score(truth, style_labels(styles))),  # as hypersort analyze scores
                     " + ".join(f"{n} {g}" for g, n in main.most_common()))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("maps", nargs="+", help="RUN=MANIFEST, or a folder written by benchmarks/demo_figures.py")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    maps = find_maps(args.maps)
    print(f"{describe()}; {len(maps)} maps\n")
    names = [*RULES, ROUND_PARTITION]
    print("| map | " + " | ".join(f"{name}: ARI" for name in names) + " | main mode (default rule) |")
    print("|---" * (len(names) + 2) + "|")
    scores = {name: [] for name in names}
    for run_dir, manifest in maps:
        result = compare_rules(run_dir, manifest, args.device)
        for name, (ari, _) in result.items():
            scores[name].append(ari)
        print(f"| {run_dir} | " + " | ".join(f"{ari:.3f}" for ari, _ in result.values())
              + f" | {result['default'][1]} |", flush=True)
    table = np.asarray([scores[name] for name in names])
    best = np.isclose(table, table.max(axis=0, keepdims=True))
    print("| mean | " + " | ".join(f"{row.mean():.3f}" for row in table) + " | |")
    print("| best on | " + " | ".join(f"{int(b.sum())} of {len(maps)}" for b in best) + " | |")
    print("| ARI >= 0.9 on | " + " | ".join(f"{int((row >= 0.9).sum())} of {len(maps)}" for row in table) + " | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
