"""``hypersort train``: train on a dataset folder; re-running the same command resumes."""

from __future__ import annotations

import argparse
from pathlib import Path

from HyperSORTLib.commands import add_training_options, training_overrides

NAME = "train"
HELP = "train on a dataset folder"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP,
                            description="Train HyperSORT on an nnU-Net raw / MSD dataset folder (dataset.json, "
                                        "imagesTr/, labelsTr/). Re-running the same command resumes the run.")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="run directory (resumed if it holds a checkpoint)")
    parser.add_argument("--config", type=Path, default=None, help="YAML run configuration")
    add_training_options(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from HyperSORTLib.config import RunConfig
    from HyperSORTLib.data import SegmentationCases, read_nnunet_folder, training_transforms
    from HyperSORTLib.training import Trainer

    cases = read_nnunet_folder(args.data)
    config = RunConfig.from_file(args.config) if args.config else RunConfig()
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, unet=dataclasses.replace(config.model.unet,
                                                                         num_classes=len(cases.class_names))),
        data=dataclasses.replace(config.data, class_names=cases.class_names),
        train=dataclasses.replace(config.train, **training_overrides(args)),
    )
    progress = not args.no_progress
    dataset = SegmentationCases(cases, training_transforms(config.data), progress=progress)
    trainer = Trainer(config, dataset, cases.case_ids, args.out, progress=progress,
                      data_source={"path": str(Path(args.data).resolve()), "format": "nnunet"})
    result = trainer.fit()
    last = result.history[-1] if result.history else {}
    print(f"Trained {result.epochs} epochs on {len(cases.cases)} cases; final loss {last.get('loss', float('nan')):.4f}. "
          f"Run directory: {args.out}")
    return 0
