"""``hypersort demo``: biased phantom cohort -> training -> latent map and metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from HyperSORTLib.commands import add_overwrite_option, add_training_options, training_overrides

NAME = "demo"
HELP = "run the built-in demo: biased phantom cohort -> train -> latent map"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP,
                            description="Generate a CT-like phantom cohort with known annotation biases, train "
                                        "HyperSORT on it, and write latent_map.png and metrics.json.")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--cases", type=int, default=None, help="number of phantom cases (default 40)")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML overriding the demo's run configuration (model/data/train sections)")
    add_overwrite_option(parser, "write into --out even where it holds files of the demo's names it did not write")
    add_training_options(parser)


def run(args: argparse.Namespace) -> int:
    from HyperSORTLib.demo.run import DemoOptions, run_demo

    options = DemoOptions(out_dir=args.out, config_path=args.config, n_cases=args.cases,
                          train_overrides=training_overrides(args), progress=not args.no_progress, overwrite=args.overwrite)
    print(run_demo(options).summary())
    return 0
