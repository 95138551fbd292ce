"""The ``hypersort`` command line.

Each subcommand lives in :mod:`HyperSORTLib.commands` (``hypersort <command> --help`` lists its
options). Bad input ends with a one-line error naming what is wrong and exit code 2, never a
traceback; Ctrl-C during training keeps the last checkpoint.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from HyperSORTLib import __version__
from HyperSORTLib.commands import COMMANDS


def _command_modules() -> dict:
    modules = {}
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"HyperSORTLib.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"HyperSORTLib.commands.{name}":
                raise
            continue  # a command not shipped in this build
        modules[module.NAME] = module
    return modules


def build_parser(modules: dict | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypersort",
        description="HyperSORT: audit the annotations of a CT segmentation dataset with a hyper-network latent map.")
    parser.add_argument("--version", action="version", version=f"hypersort {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (modules or _command_modules()).values():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    modules = _command_modules()
    args = build_parser(modules).parse_args(argv)
    try:
        return modules[args.command].run(args)
    except KeyboardInterrupt:
        print("\nInterrupted; the last checkpoint is kept and the same command resumes the run.", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:  # bad input: readable, no traceback
        print(f"hypersort {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Permissions, read-only or full file systems, a path under a file: the user's to fix, so
        # one line; any other OSError is unexpected and keeps its traceback.
        from HyperSORTLib.rundir import USER_FS_ERRNOS

        if exc.errno not in USER_FS_ERRNOS:
            raise
        print(f"hypersort {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
