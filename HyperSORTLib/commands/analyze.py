"""``hypersort analyze``: audit a trained run (suspicious samples, annotation styles, HTML report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from HyperSORTLib.commands import (add_data_option, add_device_option, add_overwrite_option, add_progress_option,
                                   add_run_option)
from HyperSORTLib.config import STYLE_ANNOTATIONS, STYLE_LINKAGES, STYLE_SMALL_COMPONENTS, STYLE_VOLUME_SCALES

NAME = "analyze"
HELP = "audit a trained run: suspicious samples, clusters described in words, HTML report"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        NAME, help=HELP,
        description="Read a run's latent map: find its annotation styles (mixture components merged where "
                    "their decoded UNets segment the probe cases alike), name the main mode (the largest "
                    "style) with its evidence, score every training sample (latent density, losses, distance "
                    "to the main mode), describe in words how each style segments, and write report.html, "
                    "samples.csv, clusters.csv and metrics.json.")
    add_run_option(parser)
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: RUN/analysis)")
    parser.add_argument("--manifest", type=Path, default=None, metavar="CSV",
                        help="ground truth CSV with case_id, group, erroneous (default: manifest.csv in the "
                             "dataset folder, when present)")
    parser.add_argument("--probe", default=None, metavar="CASE_IDS",
                        help="comma-separated training case ids to segment with every component's UNet "
                             "(default: the 3 cases nearest the heaviest mixture component)")
    add_data_option(parser, required=False,
                    help="dataset folder, when it has moved since training (default: the one in config.json)")
    add_device_option(parser)
    parser.add_argument("--max-components", type=int, default=8,
                        help="largest number of mixture components tried (default 8; BIC chooses); the "
                             "styles are merged from them")
    parser.add_argument("--stability-seeds", type=int, default=0, metavar="N",
                        help="find the styles again from N other mixture fits and report, per case, how often "
                             "it keeps its style company (samples.csv: style_stability; default 0: skip)")
    parser.add_argument("--linkage", choices=STYLE_LINKAGES, default=STYLE_LINKAGES[0],
                        help="how neighbouring mixture components merge into styles: complete (every pair "
                             "segments alike) or average (no pair differs in kind, and they segment alike on "
                             f"average over their cases); default {STYLE_LINKAGES[0]}")
    parser.add_argument("--small-components", choices=STYLE_SMALL_COMPONENTS, default=STYLE_SMALL_COMPONENTS[0],
                        help="attach: mixture components of at least a style's size merge first, and a smaller "
                             "one then joins the style of its nearest neighbour when it segments like it; merge: "
                             f"every component merges on the same terms (default {STYLE_SMALL_COMPONENTS[0]})")
    parser.add_argument("--volume-scale", choices=STYLE_VOLUME_SCALES, default=STYLE_VOLUME_SCALES[0],
                        help="typical: a class that two decoded UNets both draw at under half its usual volume "
                             "across the map is compared against that volume (two remnants of a class both mostly "
                             "omit are alike); pair: against their two volumes alone (default "
                             f"{STYLE_VOLUME_SCALES[0]})")
    parser.add_argument("--annotations", choices=STYLE_ANNOTATIONS, default=STYLE_ANNOTATIONS[0],
                        help="split: the main mode's members whose own annotations differ the same way (one class, "
                             "one direction; each against the main mode's UNet, its trend with organ size removed), "
                             "enough of them to be a style, become a style of their own; members: that, and parts of "
                             "the map whose members annotate a class differently are not merged (this can also split "
                             "a dataset of few patients by patient); ignore: the decoded UNets alone decide (default "
                             f"{STYLE_ANNOTATIONS[0]})")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="preprocessing cache written by training, read to skip preprocessing "
                             "(default $HYPERSORT_CACHE_DIR or the user cache folder)")
    parser.add_argument("--no-cache", action="store_true", help="preprocess every case from its files")
    add_overwrite_option(parser, "replace analysis files in --out that hypersort analyze did not write")
    parser.add_argument("--accept-data-change", action="store_true",
                        help="analyse on a dataset whose files differ from those the run was trained on")
    add_progress_option(parser)


def run(args: argparse.Namespace) -> int:
    from HyperSORTLib.analysis.audit import analyze_run

    if args.max_components < 1:
        raise ValueError(f"--max-components must be >= 1, found {args.max_components}.")
    if args.stability_seeds < 0:
        raise ValueError(f"--stability-seeds must be >= 0, found {args.stability_seeds}.")
    result = analyze_run(args.run, out_dir=args.out, manifest=args.manifest, probe_cases=args.probe,
                         data=args.data, device=args.device, max_components=args.max_components,
                         stability_seeds=args.stability_seeds, linkage=args.linkage,
                         small_components=args.small_components, volume_scale=args.volume_scale,
                         annotations=args.annotations,
                         cache_dir=args.cache_dir, use_cache=not args.no_cache, progress=not args.no_progress,
                         overwrite=args.overwrite, accept_data_change=args.accept_data_change)
    print(result.summary())
    return 0
