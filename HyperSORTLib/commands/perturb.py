"""``hypersort perturb``: a copy of a dataset with known annotation biases injected, plus a manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from HyperSORTLib.commands import add_data_option, add_overwrite_option, add_progress_option, add_workers_option

NAME = "perturb"
HELP = "write a perturbed copy of a dataset (known biases and errors) with a manifest"


def _builtin_plan_names() -> list[str]:
    """Names of the plans shipped in ``HyperSORTLib/perturbation/plans`` (read without importing
    the perturbation package, so ``--help`` stays fast)."""
    folder = Path(__file__).resolve().parents[1] / "perturbation" / "plans"
    return sorted(p.stem for p in folder.glob("*.yaml"))


def register(sub: argparse._SubParsersAction) -> None:
    from HyperSORTLib.commands.check_data import CLASSES_HELP

    parser = sub.add_parser(
        NAME, help=HELP,
        description="Inject known annotation biases into a copy of a dataset, following a plan (groups of cases, "
                    "perturbations, parameter ranges, seed). The copy keeps the source's layout: labels are "
                    "perturbed on their own voxel grid, images are linked (or copied), metadata is copied. "
                    "OUT/manifest.csv records each case's group, perturbation, drawn parameters, Dice and volume "
                    "change; OUT/perturb_plan.yaml the plan. The source is never modified; re-running the same "
                    "command completes an interrupted run.")
    add_data_option(parser, required=False, help="source dataset folder, or CSV case list")
    parser.add_argument("--out", type=Path, default=None, metavar="OUT",
                        help="destination folder (outside the source; not needed with --dry-run)")
    parser.add_argument("--plan", default=None,
                        help=f"plan YAML file, or a built-in plan name ({', '.join(_builtin_plan_names())})")
    group = parser.add_argument_group("dataset")
    group.add_argument("--format", default=None,
                       help="nnunet (also MSD), amos, totalsegmentator or csv; detected when omitted")
    group.add_argument("--classes", default=None, help=CLASSES_HELP)
    group.add_argument("--modality", default=None, choices=("CT", "MRI", "all"), help="AMOS: which scans")
    group.add_argument("--split", default=None, help="TotalSegmentator: only subjects of this meta.csv split")
    parser.add_argument("--copy-images", action="store_true",
                        help="copy images and other data files instead of linking them")
    add_workers_option(parser, "processes perturbing cases in parallel (default 1)", default=1)
    add_overwrite_option(parser, help="write into a non-empty destination that is not an earlier run of this plan")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the plan against the dataset and print the groups; write nothing")
    parser.add_argument("--list", action="store_true", help="list the perturbations and built-in plans, then exit")
    add_progress_option(parser)


def describe_perturbations() -> str:
    """The perturbations, their parameters and the built-in plans, for ``--list``."""
    from HyperSORTLib.perturbation.plan import BUILTIN_PLANS
    from HyperSORTLib.perturbation.registry import SPECS

    lines = ["Perturbations (parameters; values fixed, [low, high] ranges or {choice: [...]}):"]
    for spec in SPECS.values():
        lines.append(f"  {spec.name}: {spec.summary}")
        for p in spec.params:
            shown = "background" if p.kind == "classes" and p.default == (0,) else p.default
            default = "" if p.required or p.default is None else f" (default {shown})"
            domain = f", {p.domain()}" if p.kind in ("float", "int") else ""
            lines.append(f"      {p.name} [{p.kind}{domain}]{default}: {p.doc}")
        extras = [x for x, on in (("spacing from the header", spec.spacing), ("seed drawn per case", spec.seed)) if on]
        if extras:
            lines.append(f"      ({'; '.join(extras)})")
    lines.append(f"Built-in plans: {', '.join(BUILTIN_PLANS)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(describe_perturbations())
        return 0
    missing = [name for name, value in (("--data", args.data), ("--out", args.out), ("--plan", args.plan))
               if value is None]
    if missing and not (args.dry_run and missing == ["--out"]):
        raise ValueError(f"missing {', '.join(missing)}: usage 'hypersort perturb --data SRC --out OUT --plan PLAN' "
                         f"(or --list).")

    from HyperSORTLib.commands.check_data import reader_options
    from HyperSORTLib.data import read_dataset
    from HyperSORTLib.perturbation.plan import builtin_plan_path, load_plan
    from HyperSORTLib.perturbation.runner import perturb_dataset

    plan = load_plan(args.plan)
    case_list = read_dataset(args.data, args.format, args.classes, **reader_options(args))
    if args.dry_run:
        plan.check_classes(case_list.class_names)
        assignments = plan.assign(case_list.case_ids)
        groups: dict[str, list[str]] = {}
        for a in assignments:
            groups.setdefault(a.group, []).append(a.case_id)
        print(f"{len(assignments)} cases of {case_list.root} ({case_list.layout}), classes: "
              f"{', '.join(case_list.class_names[1:])}")
        for name, ids in groups.items():
            shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
            print(f"  {name}: {len(ids)} ({shown})")
        return 0
    plan_file = Path(args.plan) if Path(args.plan).is_file() else builtin_plan_path(args.plan)
    result = perturb_dataset(case_list, args.out, plan, copy_images=args.copy_images, workers=args.workers,
                             overwrite=args.overwrite, progress=not args.no_progress,
                             plan_text=plan_file.read_text(encoding="utf-8"))
    print(result.summary(), file=sys.stdout)
    return 0
