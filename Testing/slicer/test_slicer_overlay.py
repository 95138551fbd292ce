"""Headless overlay rendering (scripts/render_overlay.py): geometry, colours, PNG output."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("vtk")

from conftest import SHARED_DATA  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("render_overlay", REPO / "scripts" / "render_overlay.py")
render_overlay = importlib.util.module_from_spec(spec)
sys.modules["render_overlay"] = render_overlay
spec.loader.exec_module(render_overlay)


def _read_png(path: Path) -> np.ndarray:
    import vtk
    from vtk.util import numpy_support

    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    width, height, _ = image.GetDimensions()
    rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
    return rgb[::-1]  # top row first, as the file is viewed


def _pixel_ras(info, row: int, col: int) -> np.ndarray:
    """RAS of the centre of a pixel of the viewed image (row 0 = top)."""
    v = info["height"] - 1 - row
    return info["xy_to_ras"] @ [col, v, 0.0, 1.0]


def _is_grey(pixel) -> bool:
    return int(pixel[0]) == int(pixel[1]) == int(pixel[2])


def _boxes_scan():
    """A CT with two label boxes at known RAS positions, stored with LPS-flipped axes."""
    shape = (40, 30, 20)
    affine = np.array([[-2.0, 0, 0, 40.0], [0, -2.0, 0, 20.0], [0, 0, 2.5, -10.0], [0, 0, 0, 1]])
    ct = np.full(shape, 40.0, np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[5:15, 5:12, 6:14] = 1  # R 12..30 mm, A 0..12 mm (voxel centres), S 5..22.5 mm
    labels[25:35, 18:26, 6:14] = 2  # R -30..-8 mm, A -32..-16 mm
    ct[labels > 0] = 200.0
    return ct, affine, labels


def test_render_places_labels_at_their_ras_position_in_slicer_orientation(tmp_path):
    ct, affine, labels = _boxes_scan()
    out = tmp_path / "overlay.png"
    info = render_overlay.render_overlay(ct, affine, labels, affine, out, slice_s=12.5, size=96, window=400,
                                         level=40, opacity=0.6, class_names=["background", "a", "b"], legend=False,
                                         title="")
    image = _read_png(out)
    assert image.shape == (info["height"], info["width"], 3)
    assert info["width"] == 96 and info["slice_s"] == 12.5
    inverse = np.linalg.inv(affine)
    coloured = {1: 0, 2: 0}
    for row in range(info["height"]):
        for col in range(info["width"]):
            ijk = (inverse @ _pixel_ras(info, row, col))[:3]
            inside = [cls for cls, box in ((1, ((5, 15), (5, 12))), (2, ((25, 35), (18, 26))))
                      if box[0][0] + 0.6 <= ijk[0] <= box[0][1] - 1.6 and box[1][0] + 0.6 <= ijk[1] <= box[1][1] - 1.6]
            outside = all(not (box[0][0] - 1.6 <= ijk[0] <= box[0][1] + 0.6 and box[1][0] - 1.6 <= ijk[1] <= box[1][1] + 0.6)
                          for box in (((5, 15), (5, 12)), ((25, 35), (18, 26))))
            pixel = image[row, col]
            if inside:
                assert not _is_grey(pixel), (row, col, ijk)
                coloured[inside[0]] += 1
                if inside[0] == 1:  # tableau blue over grey: blue dominates
                    assert pixel[2] > pixel[0]
                else:  # tableau orange: red dominates
                    assert pixel[0] > pixel[2]
            elif outside:
                assert _is_grey(pixel), (row, col, ijk)
    assert coloured[1] > 20 and coloured[2] > 20
    # orientation: class 1 (patient right, anterior) is drawn left of and above class 2
    rows1, cols1 = np.nonzero(info["labels"][::-1] == 1)
    rows2, cols2 = np.nonzero(info["labels"][::-1] == 2)
    assert cols1.mean() < cols2.mean() and rows1.mean() < rows2.mean()


def test_render_matches_an_independent_resampling_of_a_real_ct(tmp_path):
    ct_path = SHARED_DATA / "ct-examples" / "chest-imaging-platform" / "ct.nii.gz"
    label_path = SHARED_DATA / "ct-examples" / "chest-imaging-platform" / "label_lung_thirds.nii.gz"
    if not ct_path.is_file():
        pytest.skip("shared CT examples are not available")
    ct_image, label_image = nib.load(str(ct_path)), nib.load(str(label_path))
    ct = np.asarray(ct_image.dataobj, dtype=np.float32)
    labels = np.asarray(label_image.dataobj).astype(np.int32)
    info = render_overlay.render_overlay(ct, ct_image.affine, labels, label_image.affine, tmp_path / "lungs.png",
                                         size=128, legend=True)
    image = _read_png(tmp_path / "lungs.png")
    assert image.shape == (info["height"], info["image_width"], 3) and info["image_width"] > info["width"]
    # nearest-neighbour lookup of every pixel centre in the label grid, done here with numpy
    rows, cols = np.mgrid[0:info["height"], 0:info["width"]]
    ras = info["xy_to_ras"] @ np.stack([cols.ravel(), info["height"] - 1 - rows.ravel(), 0 * cols.ravel(),
                                        np.ones(cols.size)])
    ijk = np.rint(np.linalg.inv(label_image.affine) @ ras)[:3].astype(int)
    valid = np.all((ijk >= 0) & (ijk < np.array(labels.shape)[:, None]), axis=0)
    expected = np.zeros(cols.size, np.int32)
    expected[valid] = labels[ijk[0, valid], ijk[1, valid], ijk[2, valid]]
    expected = expected.reshape(info["height"], info["width"])
    drawn = image[:, : info["width"]]
    is_coloured = ~((drawn[..., 0] == drawn[..., 1]) & (drawn[..., 1] == drawn[..., 2]))
    text_rows = slice(0, info["height"] - 24)  # the caption is drawn at the bottom
    agreement = np.mean(is_coloured[text_rows] == (expected[text_rows] > 0))
    assert (expected > 0).sum() > 500
    assert agreement > 0.99
    # labels 1-3: left lung thirds, 4-6: right lung thirds; Slicer's axial view shows patient right on the left
    left_lung = np.isin(info["labels"], [1, 2, 3])
    right_lung = np.isin(info["labels"], [4, 5, 6])
    assert left_lung.sum() > 100 and right_lung.sum() > 100
    assert np.nonzero(right_lung)[1].mean() < info["width"] / 2 < np.nonzero(left_lung)[1].mean()


def test_command_line_writes_png_from_nifti_files(tmp_path, capsys):
    ct, affine, labels = _boxes_scan()
    nib.save(nib.Nifti1Image(ct, affine), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(labels, affine), str(tmp_path / "labels.nii.gz"))
    out = tmp_path / "figures" / "overlay.png"
    assert render_overlay.main(["--ct", str(tmp_path / "ct.nii.gz"), "--labels", str(tmp_path / "labels.nii.gz"),
                                "--out", str(out), "--size", "80"]) == 0
    image = _read_png(out)
    assert image.shape[0] > 0 and image.shape[1] > 80  # slice plus legend panel
    assert "axial plane S" in capsys.readouterr().out
    assert not list(out.parent.glob(".*tmp*"))
    with pytest.raises(SystemExit):
        render_overlay.main(["--ct", str(tmp_path / "missing.nii.gz"), "--labels", str(tmp_path / "labels.nii.gz"),
                             "--out", str(out)])


@pytest.mark.slow
def test_command_line_segments_with_a_run(tmp_path):
    sys.path.insert(0, str(REPO / "HyperSORT"))
    from HyperSORTModule import SelfTest

    run = SelfTest.trainTinyRun(tmp_path / "train", epochs=1)
    image, affine, _ = SelfTest.syntheticCT(shape=(24, 24, 16))
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "ct.nii.gz"))
    out = tmp_path / "run_overlay.png"
    assert render_overlay.main(["--ct", str(tmp_path / "ct.nii.gz"), "--run", str(run), "--case", "case_001",
                                "--out", str(out), "--size", "64"]) == 0
    assert _read_png(out).shape[0] > 0
