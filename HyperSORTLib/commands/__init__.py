"""Subcommands of the ``hypersort`` command line, one module each.

Every module defines ``NAME``, ``HELP``, ``register(subparsers)`` (adds its parser) and
``run(args) -> int`` (the exit code). :mod:`HyperSORTLib.cli` discovers them through
:data:`COMMANDS`; heavy imports happen inside ``run`` so ``hypersort --help`` stays fast.

Options that several commands take are defined once here, so every command spells them the
same way: ``--data DATA`` (a dataset folder or CSV case list), ``--run RUN`` (a run directory
written by ``hypersort train``), ``--out DIR`` (the folder a command creates), ``--workers N``,
``--device`` (``auto`` by default), ``--overwrite`` and ``--no-progress``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

COMMANDS = ("demo", "train", "baseline", "check_data", "perturb", "analyze", "compare", "segment", "evaluate", "export",
            "explore")

#: Options whose value is a comma-separated list of numbers, which may start with a minus sign
#: (``--latent -0.4,0.1``); :func:`HyperSORTLib.cli.main` joins such a value to its option so
#: argparse does not take it for an option.
NUMBER_LIST_OPTIONS = ("--latent",)


def add_data_option(parser: Any, required: bool = True, help: str = "dataset folder, or CSV case list") -> None:
    """``--data DATA``: the dataset a command reads."""
    parser.add_argument("--data", type=Path, required=required, default=None, metavar="DATA", help=help)


def add_run_option(parser: Any, help: str = "run directory written by hypersort train") -> None:
    """``--run RUN``: the trained run a command reads."""
    parser.add_argument("--run", type=Path, required=True, metavar="RUN", help=help)


def add_workers_option(parser: Any, help: str, default: int | None = None) -> None:
    """``--workers N``: parallel threads or processes (what they do is the command's ``help``)."""
    parser.add_argument("--workers", type=int, default=default, metavar="N", help=help)


def add_device_option(parser: Any, default: str | None = "auto",
                      help: str = "auto (default), cpu, cuda or cuda:N") -> None:
    """``--device``: where models run (``auto``: the first GPU when there is one)."""
    parser.add_argument("--device", default=default, help=help)


def add_overwrite_option(parser: Any, help: str = "replace existing output files") -> None:
    parser.add_argument("--overwrite", action="store_true", help=help)


def add_progress_option(parser: Any) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. for log files)")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that train (device, epochs, seed, progress, batch size).

    ``--device`` defaults to the run configuration's ``train.device`` (itself ``auto``)."""
    add_device_option(parser, default=None, help="auto, cpu, cuda or cuda:N (default: the configuration's, auto)")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--seed", type=int, default=None, help="override the random seed")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per step")
    add_progress_option(parser)


def training_overrides(args: argparse.Namespace) -> dict:
    """The ``train`` section overrides given on the command line."""
    overrides = {}
    for key in ("device", "epochs", "seed", "batch_size"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return overrides
