"""``hypersort evaluate``: the paper's protocol on a clean dataset: perturb -> train -> analyse -> scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from HyperSORTLib.commands import (add_data_option, add_overwrite_option, add_training_options, add_workers_option,
                                   training_overrides)

NAME = "evaluate"
HELP = "check HyperSORT on a clean dataset: inject known biases, train, audit, score the audit"


def register(sub: argparse._SubParsersAction) -> None:
    from HyperSORTLib.commands.check_data import add_data_options
    from HyperSORTLib.commands.perturb import _builtin_plan_names

    parser = sub.add_parser(
        NAME, help=HELP,
        description="Run the paper's protocol on your own clean dataset in one command: inject the biases of a "
                    "perturbation plan into a copy (as hypersort perturb), train HyperSORT on the copy (as "
                    "hypersort train), audit the run (as hypersort analyze) and score the audit against the plan's "
                    "manifest: ARI/NMI of the styles against the groups; AUROC, average precision and precision@k "
                    "of the suspicion ranking against the erroneous cases; Dice and HD95 (mm) of the main mode's "
                    "UNet against the dataset's own (clean) labels; and for every systematic group whether the "
                    "UNet of the style holding most of its cases reproduces its bias (a dilated or eroded class's "
                    "volume ratio within --tolerance of the injected one, an omitted class missing, swapped "
                    "classes swapped). Prints one table and writes DIR/evaluation.json; DIR also holds "
                    "perturbed/ (the copy and its manifest.csv) and run/ (the run and its analysis/). Re-running "
                    "the same command after an interruption continues where it stopped.",
        epilog="Example: hypersort evaluate --data /data/Dataset003_Liver --plan semireal-liver "
               "--config training/configs/cpu_small.yaml --out eval_liver")
    add_data_option(parser, help="the clean dataset (folder, or CSV case list); its labels are the truth")
    parser.add_argument("--plan", required=True,
                        help=f"perturbation plan YAML, or a built-in plan name ({', '.join(_builtin_plan_names())})")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML run configuration, as for hypersort train (default: the reference configuration)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (resumed when it holds an evaluation of the same inputs)")
    parser.add_argument("--tolerance", type=float, default=0.10,
                        help="largest relative difference between a style's volume ratio and the injected one "
                             "(default 0.10)")
    add_data_options(parser)
    add_workers_option(parser, "processes perturbing cases in parallel (default 1)", default=1)
    add_overwrite_option(parser, "replace files of the evaluation's names in --out that are not an evaluation "
                                 "of these inputs")
    add_training_options(parser)


def run(args: argparse.Namespace) -> int:
    from HyperSORTLib.analysis.evaluation import evaluate_dataset
    from HyperSORTLib.commands.check_data import cache_from_args, read_from_args
    from HyperSORTLib.config import RunConfig
    from HyperSORTLib.perturbation.plan import load_plan

    if not 0.0 < args.tolerance < 1.0:
        raise ValueError(f"--tolerance must lie in (0, 1), found {args.tolerance}.")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, found {args.workers}.")
    config = RunConfig.from_file(args.config) if args.config else RunConfig()
    load_plan(args.plan)  # a bad plan or configuration fails before the dataset is read
    cases = read_from_args(args.data, args)
    result = evaluate_dataset(cases, args.plan, args.out, config,
                              train_overrides=training_overrides(args), cache=cache_from_args(args),
                              workers=args.workers, tolerance=args.tolerance, overwrite=args.overwrite,
                              allow_empty_labels=args.allow_empty_labels, progress=not args.no_progress)
    print(result.summary())
    return 0
