"""The ``hypersort`` command line.

Each subcommand lives in :mod:`HyperSORTLib.commands` (``hypersort <command> --help`` lists its
options). Bad input ends with a one-line error naming what is wrong and exit code 2, never a
traceback; Ctrl-C during training keeps the last checkpoint.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import Sequence

from HyperSORTLib import __version__
from HyperSORTLib.commands import COMMANDS, NUMBER_LIST_OPTIONS
from HyperSORTLib.utils.allocator import keep_freed_memory

_NUMBER_LIST = re.compile(r"^\s*-[\d.]")


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


def join_number_lists(argv: Sequence[str], options: Sequence[str] = NUMBER_LIST_OPTIONS) -> list[str]:
    """``["--latent", "-0.4,0.1"]`` -> ``["--latent=-0.4,0.1"]`` for the options in ``options``.

    argparse takes a separate value that starts with ``-`` for an option unless it is a single
    number; joined with ``=`` it is always the option's value.
    """
    out: list[str] = []
    argv = list(argv)
    i = 0
    while i < len(argv):
        if argv[i] in options and i + 1 < len(argv) and _NUMBER_LIST.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        if argv[i] == "--":
            out += argv[i:]
            break
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    modules = _command_modules()
    args = build_parser(modules).parse_args(join_number_lists(sys.argv[1:] if argv is None else argv))
    keep_freed_memory()  # the process is a hypersort command's own: reuse freed memory (faster steps)
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
