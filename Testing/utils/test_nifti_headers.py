"""Files whose header declares more voxels than they hold are refused from the header, before
any voxel array is allocated: in check-data's deep pass, in segment's scan loading, in label
loading and in training preprocessing (all through ``utils.nifti.open_nifti``)."""

from __future__ import annotations

import gzip
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import write_sphere_dataset
from HyperSORTLib.cli import main
from HyperSORTLib.data import read_nnunet_folder
from HyperSORTLib.data.labels import LabelError, load_label
from HyperSORTLib.data.validation import check_cases
from HyperSORTLib.inference import ScanError, load_scan
from HyperSORTLib.utils.nifti import MAX_VOXELS, NiftiSizeError, open_nifti

#: Well below what any of the declared volumes would take (4 GiB for 1024^3 float32).
MEMORY_LIMIT = 64 * 2**20


def declaring(path: Path, shape=(1024, 1024, 1024), dtype=np.float32) -> Path:
    """A NIfTI file holding a header (declaring ``shape``) and no voxel data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


class _Peak:
    """Peak Python/NumPy allocation and wall time of a block."""

    def __enter__(self):
        tracemalloc.start()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_sphere_dataset(tmp_path / "data", n_cases=3)


def test_a_tiny_gz_declaring_1024_cubed_voxels_is_refused_from_its_header(tmp_path):
    path = declaring(tmp_path / "huge.nii.gz")
    assert path.stat().st_size < 200
    with _Peak() as peak, pytest.raises(NiftiSizeError) as error:
        open_nifti(path, "image")
    message = str(error.value)
    assert str(path) in message and "(1024, 1024, 1024)" in message
    assert "4,294,967,296 bytes" in message and f"a {path.stat().st_size:,}-byte gzip file" in message
    assert peak.peak < MEMORY_LIMIT


def test_an_uncompressed_file_shorter_than_its_header_declares_is_refused(tmp_path):
    path = declaring(tmp_path / "huge.nii", shape=(512, 512, 300), dtype=np.int16)
    with pytest.raises(NiftiSizeError, match=r"\(512, 512, 300\).*holds only 352 bytes, not 157,286,752"):
        open_nifti(path, "image")


def test_a_volume_beyond_the_voxel_limit_names_the_limit(tmp_path):
    path = declaring(tmp_path / "absurd.nii.gz", shape=(30000, 30000, 30000), dtype=np.uint8)
    with pytest.raises(NiftiSizeError) as error:
        open_nifti(path, "image")
    message = str(error.value)
    assert "(30000, 30000, 30000)" in message and f"{MAX_VOXELS:,}" in message
    assert f"file size {path.stat().st_size:,} bytes" in message


@pytest.mark.parametrize("name", ["ok.nii", "ok.nii.gz"])
def test_complete_files_open(tmp_path, name):
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.eye(4)), tmp_path / name)
    assert open_nifti(tmp_path / name).shape == (3, 4, 5)


def test_a_cut_off_gz_is_refused(tmp_path):
    path = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(NiftiSizeError, match="cut.nii.gz"):
        open_nifti(path)


def test_check_data_deep_pass_reports_it_without_reading_voxels(dataset, capsys):
    image = dataset / "imagesTr" / "case_001_0000.nii.gz"
    declaring(image)
    with _Peak() as peak:
        report = check_cases(read_nnunet_folder(dataset), deep=True, workers=1)
    assert peak.peak < MEMORY_LIMIT and peak.seconds < 30
    assert report.bad_case_ids == ("case_001",)
    (problem,) = report.problems
    assert problem.kind == "truncated" and "(1024, 1024, 1024)" in problem.detail and str(image) in problem.detail
    assert main(["check-data", "--data", str(dataset), "--no-cache", "--no-progress"]) == 1
    assert "case_001" in capsys.readouterr().out


def test_segment_refuses_it_before_loading_anything(tmp_path, capsys):
    scan = declaring(tmp_path / "huge.nii.gz")
    with _Peak() as peak:  # the run does not even exist: the scan is refused first
        code = main(["segment", "--run", str(tmp_path / "no_run"), "--input", str(scan),
                     "--output", str(tmp_path / "seg.nii.gz"), "--no-progress"])
    assert code == 2 and peak.peak < MEMORY_LIMIT
    err = capsys.readouterr().err
    assert err.startswith("hypersort segment: error: Input scan") and "(1024, 1024, 1024)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "seg.nii.gz").exists()
    with pytest.raises(ScanError, match="huge.nii.gz"):
        load_scan(scan)


def test_label_loading_refuses_it_naming_the_case(dataset):
    cases = read_nnunet_folder(dataset)
    declaring(cases.cases[0].label, dtype=np.uint8)
    with _Peak() as peak, pytest.raises(LabelError, match=r"Case 'case_000'.*\(1024, 1024, 1024\)"):
        load_label(cases.cases[0], cases)
    assert peak.peak < MEMORY_LIMIT


def test_preprocessing_refuses_an_image_that_declares_too_much(dataset):
    from conftest import tiny_config
    from HyperSORTLib.data.preprocessing import preprocess_case

    cases = read_nnunet_folder(dataset)
    declaring(cases.cases[2].image)
    with _Peak() as peak, pytest.raises(NiftiSizeError, match=r"Case 'case_002': image .*\(1024, 1024, 1024\)"):
        preprocess_case(cases.cases[2], cases, tiny_config().data)
    assert peak.peak < MEMORY_LIMIT
