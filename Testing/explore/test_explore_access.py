"""The explorer's security defaults and file rules, without a browser: loopback unless asked, a token
for any other address, reads only below the folders the server was started with, writes never over
an existing file; and the command's checks before anything heavy starts."""

from __future__ import annotations

import argparse
import os

import pytest

from HyperSORTLib.cli import build_parser
from HyperSORTLib.commands import explore

pytest.importorskip("slicer")  # HyperSORTModule.Errors lives beside the module's slicer-based logic

from HyperSORTExplore.Access import (AccessPolicy, accessToken, isLoopback, reserveOutputs,  # noqa: E402
                                     safeName)
from HyperSORTModule.Errors import HyperSORTError  # noqa: E402


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("192.168.1.20", False)])
def test_loopback_addresses(host, loopback):
    assert isLoopback(host) is loopback


def test_other_addresses_get_a_generated_token_and_loopback_none():
    assert accessToken("127.0.0.1", None) == (None, False)
    token, generated = accessToken("0.0.0.0", None)
    assert generated and len(token) >= 24 and token != accessToken("0.0.0.0", None)[0]
    assert accessToken("0.0.0.0", "my-own-token-1234567") == ("my-own-token-1234567", False)
    with pytest.raises(ValueError, match="at least 16 characters"):
        accessToken("0.0.0.0", "short")
    with pytest.raises(ValueError, match="at least 16 characters"):
        accessToken("127.0.0.1", "has spaces in it, not url safe")


def test_reads_only_below_the_start_folders(tmp_path):
    allowed, other = tmp_path / "scans", tmp_path / "private"
    allowed.mkdir(), other.mkdir()
    (allowed / "ct.nii.gz").write_bytes(b"x")
    (other / "secret.nii.gz").write_bytes(b"x")
    (allowed / "link.nii.gz").symlink_to(other / "secret.nii.gz")
    policy = AccessPolicy([allowed / "ct.nii.gz"])  # a file means its folder
    assert policy.checkRead(allowed / "ct.nii.gz") == (allowed / "ct.nii.gz").resolve()
    for path in (other / "secret.nii.gz", allowed / ".." / "private" / "secret.nii.gz", allowed / "link.nii.gz"):
        with pytest.raises(HyperSORTError, match="outside the folders this server may read"):
            policy.checkRead(path)
    with pytest.raises(HyperSORTError, match="does not exist"):
        policy.checkRead(allowed / "missing.nii.gz")
    with pytest.raises(HyperSORTError, match="Enter the path"):
        policy.checkRead("  ")


def test_outputs_are_reserved_beside_the_scan_and_never_over_existing_files(tmp_path):
    scan = tmp_path / "ct.nii.gz"
    scan.write_bytes(b"scan")
    first = reserveOutputs(scan, "case_001", (".nii.gz", ".seg.nrrd"))
    assert [p.name for p in first] == ["ct_hypersort_case_001.nii.gz", "ct_hypersort_case_001.seg.nrrd"]
    assert all(p.is_file() and p.stat().st_size == 0 for p in first)
    (tmp_path / "ct_hypersort_case_001_2.seg.nrrd").write_bytes(b"the user's file")  # only one of the pair
    third = reserveOutputs(scan, "case_001", (".nii.gz", ".seg.nrrd"))
    assert [p.name for p in third] == ["ct_hypersort_case_001_3.nii.gz", "ct_hypersort_case_001_3.seg.nrrd"]
    assert (tmp_path / "ct_hypersort_case_001_2.seg.nrrd").read_bytes() == b"the user's file"
    assert not (tmp_path / "ct_hypersort_case_001_2.nii.gz").exists()
    assert safeName("style 0 (main mode)") == "style-0-main-mode"


def _args(tmp_path, **overrides) -> argparse.Namespace:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    argv = ["explore", "--run", str(run)]
    for key, value in overrides.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return build_parser().parse_args(argv)


def test_command_defaults_to_loopback_and_checks_its_arguments_first(tmp_path):
    args = _args(tmp_path)
    assert (args.host, args.port, args.token, args.device, args.preview_delay_ms) == ("127.0.0.1", 8080, None,
                                                                                        "auto", 150.0)
    assert explore.check_arguments(args) == [tmp_path / "run"]
    with pytest.raises(FileNotFoundError, match="--ct"):
        explore.check_arguments(_args(tmp_path, ct=tmp_path / "missing.nii.gz"))
    with pytest.raises(ValueError, match="--port"):
        explore.check_arguments(_args(tmp_path, port=70000))
    with pytest.raises(FileNotFoundError, match="--allow"):
        explore.check_arguments(_args(tmp_path, allow=tmp_path / "nowhere"))
    scan = tmp_path / "scans" / "ct.nii.gz"
    scan.parent.mkdir()
    scan.write_bytes(b"x")
    assert explore.check_arguments(_args(tmp_path, ct=scan)) == [tmp_path / "run", scan.parent]
    assert explore.front_end_path().name == "HyperSORT"
    assert os.path.isdir(explore.front_end_path() / "HyperSORTExplore")
