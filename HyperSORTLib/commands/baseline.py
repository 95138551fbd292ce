"""``hypersort baseline``: train a robust-training baseline on a dataset, as ``train`` trains HyperSORT.

The data options, checks, preprocessing, configuration and resume rules are ``train``'s; the run
directory holds one UNet, which ``hypersort segment`` uses for any latent point.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from HyperSORTLib.commands import add_overwrite_option
from HyperSORTLib.commands.train import add_train_command_options

NAME = "baseline"
HELP = "train a robust-training baseline (plain UNet, MCPM, PINT, CE + marginal threshold)"
METHOD_CHOICES = ("unet", "mcpm", "pint", "ce-threshold")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        NAME, help=HELP,
        description="Train the UNet that HyperSORT generates, with one robust-training method, on the same "
                    "preprocessed data, configuration (epochs, batch size, optimiser, seed) and checks as hypersort "
                    "train. unet: soft Dice + cross-entropy; ce-threshold: cross-entropy, labels by the per-image "
                    "soft-Dice threshold t*; mcpm: meta-learned voxel weights on a clean meta set (--meta-data); "
                    "pint: EMA teacher under input noise, labels trusted where it is certain. Re-running the same "
                    "command resumes the run.")
    parser.add_argument("--method", required=True, choices=METHOD_CHOICES, help="the baseline to train")
    add_train_command_options(parser)
    parser.add_argument("--meta-data", type=Path, default=None, metavar="DATA",
                        help="mcpm: dataset of a few cases with clean labels (same format and classes as --data)")
    parser.add_argument("--baseline-config", type=Path, default=None,
                        help="YAML settings of the method (keys mcpm, pint; see HyperSORTLib.baselines.config)")
    add_overwrite_option(parser, help="replace a run already in --out instead of resuming it")


def run(args: argparse.Namespace) -> int:
    from HyperSORTLib import rundir
    from HyperSORTLib.baselines import BaselineConfig, BaselineTrainer
    from HyperSORTLib.commands.check_data import cache_from_args, read_from_args
    from HyperSORTLib.commands.train import prepare_training
    from HyperSORTLib.data.dataset import PreprocessedCases

    baseline = (BaselineConfig.from_file(args.baseline_config, args.method) if args.baseline_config
                else BaselineConfig(method=args.method))
    if args.method == "mcpm" and args.meta_data is None:
        raise ValueError("--method mcpm needs --meta-data: a few cases with clean labels.")
    if args.method != "mcpm" and args.meta_data is not None:
        raise ValueError(f"--meta-data is used by --method mcpm only, not {args.method}.")
    if args.overwrite and rundir.is_run_dir(args.out):
        remove_run(args.out)
    prepared = prepare_training(args, "hypersort baseline")
    if prepared is None:
        return 1
    config, dataset = prepared
    cases = dataset.case_list
    meta = None
    if args.meta_data is not None:
        meta_cases = read_from_args(args.meta_data, args)
        if tuple(meta_cases.class_names) != tuple(cases.class_names):
            raise ValueError(f"--meta-data {args.meta_data} has the classes {', '.join(meta_cases.class_names)}; "
                             f"--data has {', '.join(cases.class_names)}.")
        meta = PreprocessedCases(meta_cases, config.data, cache=cache_from_args(args), progress=not args.no_progress)
    trainer = BaselineTrainer(config, dataset, cases.case_ids, args.out, baseline, meta_dataset=meta,
                              meta_case_ids=meta.case_list.case_ids if meta is not None else (),
                              progress=not args.no_progress, data_source=cases.source,
                              accept_data_change=args.accept_data_change)
    result = trainer.fit()
    last = result.history[-1] if result.history else {}
    print(f"Trained the {args.method} baseline {result.epochs} epochs on {len(cases.cases)} cases; final loss "
          f"{last.get('loss', float('nan')):.4f}. Run directory: {args.out}")
    return 0


def remove_run(run_dir: Path) -> None:
    """Delete the files a run directory holds (only the run's own file names), for ``--overwrite``."""
    from HyperSORTLib import rundir

    method = rundir.run_method(rundir.read_run_config(run_dir)[2])["name"]
    if method == rundir.METHOD_HYPERSORT:
        raise ValueError(f"--out {run_dir} holds a HyperSORT run (hypersort train); --overwrite replaces baseline "
                         f"runs only. Choose another folder.")
    for name in (rundir.CHECKPOINT_FILE, rundir.MODEL_FILE, rundir.LATENTS_FILE, rundir.LOG_FILE,
                 rundir.SKIPPED_FILE, rundir.CONFIG_FILE):
        path = Path(run_dir) / name
        if path.is_file():
            path.unlink()
    print(f"Replacing the run in {run_dir} (--overwrite).", file=sys.stderr)
