"""``hypersort check-data``: check every case of a dataset and list the broken ones.

Also defines the dataset options shared with ``hypersort train`` (format, class selection,
reader options, cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from HyperSORTLib.commands import add_data_option, add_overwrite_option, add_progress_option, add_workers_option

NAME = "check-data"
HELP = "check a dataset and list broken cases"

CLASSES_HELP = ("classes to use, comma separated, background implied: 'liver' or 'liver,kidney_left=left kidney' "
                "(SOURCE=NAME renames; SOURCE is a class name or label value, e.g. 6=liver). Default: all classes")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Dataset format, class selection, reader options and cache location."""
    group = parser.add_argument_group("dataset")
    group.add_argument("--format", default=None,
                       help="nnunet (also MSD), amos, totalsegmentator or csv; detected when omitted")
    group.add_argument("--classes", default=None, help=CLASSES_HELP)
    group.add_argument("--modality", default=None, choices=("CT", "MRI", "all"),
                       help="AMOS: which scans to use (default CT: cases numbered up to 500)")
    group.add_argument("--split", default=None,
                       help="TotalSegmentator: only subjects of this meta.csv split (train, val or test)")
    group.add_argument("--cache-dir", type=Path, default=None,
                       help="cache folder for preprocessed cases and check results "
                            "(default $HYPERSORT_CACHE_DIR or the user cache folder)")
    group.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    group.add_argument("--allow-empty-labels", action="store_true",
                       help="an empty label is not a problem (e.g. injected errors that the audit should find)")


def reader_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if getattr(args, "modality", None):
        options["modality"] = args.modality
    if getattr(args, "split", None):
        options["split"] = args.split
    return options


def read_from_args(path: Path, args: argparse.Namespace) -> Any:
    """The :class:`~HyperSORTLib.data.CaseList` the dataset options describe."""
    from HyperSORTLib.data import read_dataset

    return read_dataset(path, args.format, args.classes, **reader_options(args))


def cache_from_args(args: argparse.Namespace) -> Any:
    """The cache the options select, or ``None`` with ``--no-cache``."""
    if getattr(args, "no_cache", False):
        return None
    from HyperSORTLib.data.cache import PreprocessCache

    return PreprocessCache(args.cache_dir)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        NAME, help=HELP,
        description="Check every case of a dataset: missing, unreadable or truncated files, image/label shape "
                    "or affine mismatch, label values outside the class map, empty labels, NaN/inf, absurd "
                    "spacing, duplicate ids. Prints a table of the bad cases; exit code 1 when there is any.")
    add_data_option(parser)
    add_data_options(parser)
    parser.add_argument("--headers-only", action="store_true",
                        help="read headers only (fast; truncation by gzip length, no voxel checks)")
    add_workers_option(parser, "parallel reading threads (default: CPUs, max 8)")
    parser.add_argument("--report", type=Path, default=None, metavar="CSV",
                        help="also write the problems to this CSV file")
    add_overwrite_option(parser, help="replace an existing --report file")
    add_progress_option(parser)


def print_report(report: Any, stream: Any = None) -> None:
    stream = stream or sys.stdout
    print(report.summary(), file=stream)
    if not report.ok:
        print(report.table(), file=stream)


def write_report_csv(path: Path, problems: Any) -> None:
    import csv
    import io

    from HyperSORTLib.utils.io import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case_id", "kind", "detail"])
    writer.writeheader()
    writer.writerows(p.to_dict() for p in problems)
    atomic_write_text(path, buffer.getvalue())


def run(args: argparse.Namespace) -> int:
    from HyperSORTLib.data.validation import check_cases
    from HyperSORTLib.utils.io import check_output_file

    if args.report is not None:  # before reading anything: the report never replaces data
        check_output_file(args.report, args.overwrite, "--report", inputs=(args.data,))
    case_list = read_from_args(args.data, args)
    names = ", ".join(case_list.class_names[1:])
    print(f"{args.data}: {case_list.layout} layout, {len(case_list.cases)} cases, "
          f"{len(case_list.class_names) - 1} classes ({names}).")
    report = check_cases(case_list, deep=not args.headers_only, workers=args.workers, cache=cache_from_args(args),
                         progress=not args.no_progress, allow_empty=args.allow_empty_labels)
    print_report(report)
    if args.report is not None:
        write_report_csv(args.report, report.problems)
    return 0 if report.ok else 1
