"""Subcommands of the ``hypersort`` command line, one module each.

Every module defines ``NAME``, ``HELP``, ``register(subparsers)`` (adds its parser) and
``run(args) -> int`` (the exit code). :mod:`HyperSORTLib.cli` discovers them through
:data:`COMMANDS`; heavy imports happen inside ``run`` so ``hypersort --help`` stays fast.
"""

from __future__ import annotations

import argparse

from HyperSORTLib.device import DEFAULT_DEVICE

COMMANDS = ("demo", "train", "check_data", "perturb", "analyze", "segment")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that train (device, epochs, seed, progress, batch size)."""
    parser.add_argument("--device", default=DEFAULT_DEVICE,
                        help="auto (default: the configuration's train.device, itself auto), cpu, cuda or cuda:N")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--seed", type=int, default=None, help="override the random seed")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per step")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. for log files)")


def training_overrides(args: argparse.Namespace) -> dict:
    """The ``train`` section overrides given on the command line."""
    overrides = {}
    for key in ("device", "epochs", "seed", "batch_size"):
        value = getattr(args, key, None)
        if value is not None and not (key == "device" and value == DEFAULT_DEVICE):
            overrides[key] = value
    return overrides
