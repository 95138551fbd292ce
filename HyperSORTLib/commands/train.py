"""``hypersort train``: check a dataset, then train on it; re-running the same command resumes.

Started by ``torchrun`` (see ``training/README.md``) it trains data-parallel: rank 0 checks and
preprocesses the dataset first (into the shared cache), the other processes then read it from
the cache, and only rank 0 writes the run directory and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from HyperSORTLib.commands import add_data_option, add_training_options, add_workers_option, training_overrides
from HyperSORTLib.commands.check_data import add_data_options, cache_from_args, print_report, read_from_args

NAME = "train"
HELP = "train on a dataset"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        NAME, help=HELP,
        description="Train HyperSORT on a dataset (nnU-Net raw / MSD, AMOS, TotalSegmentator or a CSV list). "
                    "Every case is checked first (as check-data does); training refuses a dataset with broken "
                    "cases unless --skip-bad-cases leaves them out. Re-running the same command resumes the run.")
    add_train_command_options(parser)


def add_train_command_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that train into a run directory (``train``, ``baseline``)."""
    add_data_option(parser)
    parser.add_argument("--out", type=Path, required=True, help="run directory (resumed if it holds a checkpoint)")
    parser.add_argument("--config", type=Path, default=None, help="YAML run configuration")
    add_data_options(parser)
    parser.add_argument("--skip-bad-cases", action="store_true",
                        help="leave out the cases that fail the checks (listed in the run's skipped_cases.csv)")
    add_workers_option(parser, "data-loading worker processes (default: the configuration's train.num_workers)")
    parser.add_argument("--accept-data-change", action="store_true",
                        help="resume although the dataset's files (or folder) differ from those the run was started "
                             "on; the change is recorded in the run's config.json")
    add_training_options(parser)


def run(args: argparse.Namespace) -> int:
    from HyperSORTLib.training import DistributedContext, Trainer
    from HyperSORTLib.training.distributed import (broadcast_from_main, close_process_group, init_process_group,
                                                   quiet_unless_main)

    context = DistributedContext.from_environment()  # one process unless torchrun started this one
    init_process_group(context)
    try:
        with quiet_unless_main(context):
            prepared = prepare_training(args, "hypersort train") if context.is_main else None
            # The other processes wait until rank 0 has checked and cached the data, then read the cache.
            if broadcast_from_main(context, prepared is not None) and not context.is_main:
                prepared = prepare_training(args, "hypersort train", main_process=False)
            if prepared is None:
                return 1
            config, dataset = prepared
            cases = dataset.case_list
            trainer = Trainer(config, dataset, cases.case_ids, args.out, progress=not args.no_progress,
                              data_source=cases.source, accept_data_change=args.accept_data_change,
                              distributed=context)
            result = trainer.fit()
    finally:
        close_process_group(context)
    if not context.is_main:
        return 0
    last = result.history[-1] if result.history else {}
    processes = f" in {context.world_size} processes" if context.is_distributed else ""
    print(f"Trained {result.epochs} epochs on {len(cases.cases)} cases{processes}; final loss "
          f"{last.get('loss', float('nan')):.4f}. Run directory: {args.out}")
    return 0


def prepare_training(args: argparse.Namespace, command: str, main_process: bool = True):
    """Check ``args.out`` and the dataset, preprocess it and write the skipped cases: the
    ``(config, dataset)`` to train on, or ``None`` after printing why training is refused.

    Shared by ``train`` and ``baseline`` (which take the same data options). ``main_process``
    false: another process of a distributed run, after rank 0 prepared the same data; it shows
    no progress and writes nothing."""
    from HyperSORTLib.commands.check_data import write_report_csv
    from HyperSORTLib.config import RunConfig
    from HyperSORTLib.data.dataset import PreprocessedCases
    from HyperSORTLib.data.validation import Problem, check_cases
    from HyperSORTLib.rundir import SKIPPED_FILE, check_run_output, ensure_writable

    check_run_output(args.out)  # before anything is written there
    if main_process:
        ensure_writable(args.out, create=False)  # an unwritable folder fails before the checks and preprocessing
    config = RunConfig.from_file(args.config) if args.config else RunConfig()
    cases = read_from_args(args.data, args)
    cache = cache_from_args(args)
    progress = main_process and not args.no_progress
    report = check_cases(cases, cache=cache, progress=progress, allow_empty=args.allow_empty_labels)
    if not report.ok:
        print_report(report, sys.stderr)
        if report.dataset_problems:  # e.g. a selected class in no label: leaving cases out cannot fix it
            print(f"{command}: refusing to train: {report.dataset_problems[0].detail}.", file=sys.stderr)
            return None
        if not args.skip_bad_cases:
            print(f"{command}: refusing to train on {len(report.bad_case_ids)} bad case(s); fix them, or "
                  f"pass --skip-bad-cases to leave them out.", file=sys.stderr)
            return None
        print(f"Leaving out {len(report.bad_case_ids)} bad case(s).", file=sys.stderr)
        cases = cases.without(report.bad_case_ids)
    if not cases.cases:
        raise ValueError(f"No usable case left in {args.data}.")

    overrides = training_overrides(args)
    if args.workers is not None:
        overrides["num_workers"] = args.workers
    config = config.for_dataset(cases, **overrides)
    dataset = PreprocessedCases(cases, config.data, cache=cache, progress=progress,
                                workers=config.train.num_workers, skip_failed=args.skip_bad_cases)
    skipped = list(report.problems) + [Problem(case_id, "preprocessing", message)
                                       for case_id, message in dataset.failures]
    if dataset.failures:
        print(f"Left out {len(dataset.failures)} case(s) that failed preprocessing: "
              f"{', '.join(c for c, _ in dataset.failures)}.", file=sys.stderr)
    if not len(dataset):
        raise ValueError(f"No usable case left in {args.data}.")
    if main_process:
        ensure_writable(args.out)
        if skipped:
            write_report_csv(args.out / SKIPPED_FILE, skipped)
    return config, dataset
