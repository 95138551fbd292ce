"""The conventions every ``hypersort`` command shares: option spellings, values that start with
a minus sign, and report files that are never overwritten without ``--overwrite``."""

from __future__ import annotations

import argparse

import pytest

from conftest import write_sphere_dataset
from HyperSORTLib.cli import _command_modules, build_parser, join_number_lists, main


def _options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {s for action in sub.choices[command]._actions for s in action.option_strings}


@pytest.mark.parametrize("command, expected", [
    ("check-data", {"--data", "--workers", "--overwrite", "--no-progress"}),
    ("train", {"--data", "--out", "--workers", "--device", "--no-progress"}),
    ("perturb", {"--data", "--out", "--workers", "--overwrite", "--no-progress"}),
    ("analyze", {"--run", "--data", "--out", "--device", "--no-progress"}),
    ("segment", {"--run", "--device", "--overwrite", "--no-progress"}),
    ("demo", {"--out", "--device", "--no-progress"}),
    ("export", {"--run", "--data", "--out", "--overwrite"}),
    ("evaluate", {"--data", "--out", "--workers", "--device", "--overwrite", "--no-progress"}),
    ("explore", {"--run", "--data", "--device"}),
])
def test_every_command_spells_shared_options_the_same_way(command, expected):
    options = _options(command)
    assert expected <= options
    assert not options & {"--num-workers", "--run-dir", "--dataset", "--src", "--dst"}


def test_no_command_takes_positional_paths():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in _command_modules():
        positionals = [a.dest for a in sub.choices[name]._actions if not a.option_strings and a.dest != "help"]
        assert positionals == [], (name, positionals)


def test_device_defaults_to_auto():
    parser = build_parser()
    args = parser.parse_args(["segment", "--run", "r", "--input", "i.nii.gz", "--output", "o.nii.gz"])
    assert args.device == "auto"
    assert parser.parse_args(["analyze", "--run", "r"]).device == "auto"


@pytest.mark.parametrize("argv, expected", [
    (["segment", "--latent", "-0.4,0.1"], ["segment", "--latent=-0.4,0.1"]),
    (["segment", "--latent", "0.4,-0.1"], ["segment", "--latent", "0.4,-0.1"]),
    (["segment", "--latent", "-.5,1"], ["segment", "--latent=-.5,1"]),
    (["segment", "--latent", "--preview"], ["segment", "--latent", "--preview"]),
    (["segment", "--", "--latent", "-1,2"], ["segment", "--", "--latent", "-1,2"]),
])
def test_number_lists_that_start_with_a_minus_are_joined_to_their_option(argv, expected):
    assert join_number_lists(argv) == expected


def test_check_data_report_is_never_overwritten_without_overwrite(tmp_path, capsys):
    data = write_sphere_dataset(tmp_path / "data", n_cases=2)
    report = tmp_path / "report.csv"
    report.write_text("user data\n")
    args = ["check-data", "--data", str(data), "--no-cache", "--no-progress", "--report", str(report)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--report" in err and "already exists; pass --overwrite" in err
    assert report.read_text() == "user data\n"
    assert main([*args, "--overwrite"]) == 0
    assert report.read_text().startswith("case_id,kind,detail")


def test_check_data_report_is_never_the_case_list(tmp_path, capsys):
    data = write_sphere_dataset(tmp_path / "data", n_cases=2)
    listing = tmp_path / "cases.csv"
    listing.write_text("image,label\n" + "".join(
        f"{data}/imagesTr/case_{i:03d}_0000.nii.gz,{data}/labelsTr/case_{i:03d}.nii.gz\n" for i in range(2)))
    before = listing.read_text()
    assert main(["check-data", "--data", str(listing), "--no-cache", "--no-progress", "--report",
                 str(tmp_path / "." / "cases.csv"), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err and listing.read_text() == before


def test_check_data_report_in_a_folder_that_is_a_file(tmp_path, capsys):
    data = write_sphere_dataset(tmp_path / "data", n_cases=2)
    (tmp_path / "afile").write_text("x")
    assert main(["check-data", "--data", str(data), "--no-cache", "--no-progress", "--report",
                 str(tmp_path / "afile" / "r.csv")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_perturb_help_names_every_built_in_plan():
    from HyperSORTLib.commands.perturb import _builtin_plan_names
    from HyperSORTLib.perturbation.plan import BUILTIN_PLANS

    assert _builtin_plan_names() == sorted(BUILTIN_PLANS)
