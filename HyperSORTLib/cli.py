"""The ``hypersort`` command line.

Subcommands:
    demo    generate the built-in biased phantom cohort, train, and report what the latent map found
    train   train on a dataset folder (nnU-Net raw / MSD layout), resumable
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from HyperSORTLib import __version__


def _add_common_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--seed", type=int, default=None, help="override the random seed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. for log files)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypersort",
        description="HyperSORT: audit the annotations of a CT segmentation dataset with a hyper-network latent map.")
    parser.add_argument("--version", action="version", version=f"hypersort {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the built-in demo: biased phantom cohort -> train -> latent map",
                          description="Generate a CT-like phantom cohort with known annotation biases, train "
                                      "HyperSORT on it, and write latent_map.png and metrics.json.")
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    demo.add_argument("--cases", type=int, default=None, help="number of phantom cases (default 40)")
    demo.add_argument("--batch-size", type=int, default=None, help="samples per step")
    demo.add_argument("--config", type=Path, default=None,
                      help="YAML overriding the demo's run configuration (model/data/train sections)")
    _add_common_training(demo)

    train = sub.add_parser("train", help="train on a dataset folder",
                           description="Train HyperSORT on an nnU-Net raw / MSD dataset folder (dataset.json, "
                                       "imagesTr/, labelsTr/). Re-running the same command resumes the run.")
    train.add_argument("--data", type=Path, required=True, help="dataset folder")
    train.add_argument("--out", type=Path, required=True, help="run directory (resumed if it holds a checkpoint)")
    train.add_argument("--config", type=Path, default=None, help="YAML run configuration")
    train.add_argument("--batch-size", type=int, default=None, help="samples per step")
    _add_common_training(train)
    return parser


def _train_overrides(args: argparse.Namespace) -> dict:
    overrides = {}
    for key in ("device", "epochs", "seed"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "batch_size", None) is not None:
        overrides["batch_size"] = args.batch_size
    return overrides


def _cmd_demo(args: argparse.Namespace) -> int:
    from HyperSORTLib.demo.run import DemoOptions, run_demo

    options = DemoOptions(out_dir=args.out, config_path=args.config, n_cases=args.cases,
                          train_overrides=_train_overrides(args), progress=not args.no_progress)
    result = run_demo(options)
    print(result.summary())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
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
        train=dataclasses.replace(config.train, **_train_overrides(args)),
    )
    dataset = SegmentationCases(cases, training_transforms(config.data), progress=not args.no_progress)
    result = Trainer(config, dataset, cases.case_ids, args.out, progress=not args.no_progress).fit()
    last = result.history[-1] if result.history else {}
    print(f"Trained {result.epochs} epochs on {len(cases.cases)} cases; final loss {last.get('loss', float('nan')):.4f}. "
          f"Run directory: {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"demo": _cmd_demo, "train": _cmd_train}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("\nInterrupted; the last checkpoint is kept and the same command resumes the run.", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:  # bad input: a readable message, no traceback
        print(f"hypersort {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
