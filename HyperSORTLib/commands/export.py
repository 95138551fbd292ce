"""``hypersort export``: the dataset after a review, without the cases whose label is wrong."""

from __future__ import annotations

import argparse
from pathlib import Path

from HyperSORTLib.commands import add_data_option, add_overwrite_option, add_run_option

NAME = "export"
HELP = "write the reviewed case list (without rejected cases) and the list to re-annotate"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP + ". The source dataset is never modified.")
    add_run_option(parser, help="run directory whose cases were reviewed")
    parser.add_argument("--review", type=Path, default=None,
                        help="review file (default RUN/analysis/review.csv, written by the Slicer module)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder to write cases.csv and reannotate.csv (and the dataset layout) into")
    parser.add_argument("--layout", choices=("csv", "dataset"), default="csv",
                        help="csv: the two case lists (default); dataset: also the kept cases in the dataset's "
                             "own layout (links to the source files)")
    parser.add_argument("--copy", action="store_true", help="with --layout dataset, copy files instead of linking")
    add_data_option(parser, required=False,
                    help="the dataset, when it moved since training (default: the run's recorded data source)")
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    from HyperSORTLib.analysis.export import export_reviewed

    data = None
    if args.data is not None:
        from HyperSORTLib.data.readers import case_list_from_source
        from HyperSORTLib.rundir import read_run_config

        _, _, doc = read_run_config(args.run)
        data = case_list_from_source({**(doc.get("data_source") or {}), "path": str(args.data)})
    result = export_reviewed(args.run, args.out, review=args.review, data=data, layout=args.layout,
                             copy=args.copy, overwrite=args.overwrite)
    print(f"Kept {len(result.kept)} cases ({result.out / 'cases.csv'}); {len(result.reannotate)} to re-annotate "
          f"({result.out / 'reannotate.csv'}).")
    return 0
