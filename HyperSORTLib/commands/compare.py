"""``hypersort compare``: do two trainings of the same dataset find the same styles, case by case?"""

from __future__ import annotations

import argparse
from pathlib import Path

from HyperSORTLib.commands import add_overwrite_option

NAME = "compare"
HELP = "compare the audits of runs trained on the same dataset (e.g. two seeds): which cases change style company"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        NAME, help=HELP,
        description="Compare the styles that hypersort analyze found in two or more runs of the same dataset "
                    "(for example trained with different --seed): the adjusted Rand index of every pair of "
                    "runs, and per case its agreement, the share of the other cases it is grouped with, or "
                    "kept apart from, in both runs alike. A case with low agreement sits where the map does "
                    "not settle its style. Each run needs a current audit (hypersort analyze --run RUN).")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, metavar="RUN",
                        help="two or more run directories, each audited by hypersort analyze")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="also write style_agreement.csv (per case: its row in every run, its agreement) "
                             "and style_agreement.json (the runs, their weights, the pairwise ARI) here")
    parser.add_argument("--below", type=float, default=0.9,
                        help="list the cases whose agreement is below this (default 0.9)")
    add_overwrite_option(parser, help="replace files of these names in --out that hypersort compare did not write")


def run(args: argparse.Namespace) -> int:
    from HyperSORTLib.analysis.compare import compare_runs

    if not 0.0 <= args.below <= 1.0:
        raise ValueError(f"--below must be within 0..1; found {args.below}.")
    result = compare_runs(args.runs, out_dir=args.out, overwrite=args.overwrite, below=args.below)
    print(f"{len(result.case_ids)} cases, {len(result.runs)} runs:")
    for k, run_dir in enumerate(result.runs):
        print(f"  run {k + 1}: {run_dir}")
    print("Adjusted Rand index between the runs' styles:")
    for k in range(len(result.runs)):
        print("  run " + f"{k + 1}: " + "  ".join(f"{v:5.3f}" for v in result.ari[k]))
    print(f"Agreement per case (share of the other cases grouped alike in both runs): mean "
          f"{result.agreement.mean():.3f}, lowest {result.agreement.min():.3f}")
    unsettled = result.unsettled(args.below)
    if unsettled:
        print(f"{len(unsettled)} case(s) below {args.below:g}, their style not settled by the map:")
        for i in unsettled:
            rows = ", ".join(f"run {k + 1}: {names[i]}" for k, names in enumerate(result.names))
            print(f"  {result.case_ids[i]}  {result.agreement[i]:.3f}  ({rows})")
    else:
        print(f"Every case agrees at {args.below:g} or more: the runs find the same styles.")
    if args.out is not None:
        print(f"Written: {Path(args.out) / 'style_agreement.csv'}, {Path(args.out) / 'style_agreement.json'}")
    return 0
