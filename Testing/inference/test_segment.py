"""Segmenting scans from latent points: geometry back onto the input grid, the interactive API,
and ``hypersort segment``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, tiny_config, write_sphere_dataset
from HyperSORTLib.cli import main
from HyperSORTLib.config import RunConfig
from HyperSORTLib.device import autocast_dtype
from HyperSORTLib.data import SegmentationCases, read_nnunet_folder, training_transforms
from HyperSORTLib.inference import InteractiveSegmenter, ScanError, TrainedRun, load_scan, prepare_volume
from HyperSORTLib.inference.geometry import logits_to_labels
from HyperSORTLib.training import Trainer

CT = SHARED_DATA / "ct-examples"
REAL_SCANS = {
    "body_3mm": CT / "totalsegmentator" / "A_example_ct_3mm" / "ct.nii.gz",
    "abdomen_0.98x0.98x2mm": CT / "totalsegmentator" / "B_example_ct_dicom" / "ct.nii.gz",
    "crop_1.5mm": CT / "totalsegmentator" / "C_aorta_crop_1p5mm" / "ct.nii.gz",
    "chest_4mm": CT / "chest-imaging-platform" / "ct.nii.gz",
}


def _config() -> RunConfig:
    config = tiny_config(epochs=2)
    # resampling to 6 mm keeps the real scans small; the patch makes larger scans slide
    return dataclasses.replace(config, data=dataclasses.replace(config.data, spacing=(6.0, 6.0, 6.0),
                                                                patch_size=(16, 16, 16)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("segment")
    data = write_sphere_dataset(root / "data", n_cases=4, shape=(24, 24, 24), spacing=(3.0, 3.0, 3.0))
    cases = read_nnunet_folder(data)
    config = _config()
    torch.set_num_threads(1)
    dataset = SegmentationCases(cases, training_transforms(config.data))
    Trainer(config, dataset, cases.case_ids, root / "run", progress=False,
            data_source={"path": str(data), "format": "nnunet"}).fit()
    return root / "run"


def _oblique_affine(spacing=(2.5, 3.0, 3.5), angle=0.4) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing) @ np.diag([-1, 1, -1])  # LPS-like flips, then oblique
    affine[:3, 3] = [40.0, -20.0, 15.0]
    return affine


def _grid_centre(shape, affine) -> np.ndarray:
    return (np.array(shape) - 1) / 2 @ affine[:3, :3].T + affine[:3, 3]


def _world_label(shape, affine, centre, scale: float = 1.0) -> np.ndarray:
    """Two balls around the world (RAS) point ``centre``, sampled on a voxel grid."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    label = np.zeros(len(xyz), np.uint8)
    label[np.linalg.norm(xyz - centre - np.array([8, 0, 0]) * scale, axis=1) < 14 * scale] = 1
    label[np.linalg.norm(xyz - centre + np.array([10, 4, 0]) * scale, axis=1) < 9 * scale] = 2
    return label.reshape(shape)


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("affine", [np.diag([-2.0, -2.0, 2.0, 1.0]), _oblique_affine()], ids=["LPS", "oblique"])
def test_prediction_maps_back_onto_the_input_grid(affine):
    """One-hot 'logits' of a world-space label on the preprocessed grid map back to the same label."""
    shape = (30, 26, 22)
    config = _config().data
    prepared = prepare_volume(np.zeros(shape, np.float32), affine, dataclasses.replace(config, spacing=None))
    centre = _grid_centre(shape, affine)
    label_pre = _world_label(prepared.image.shape[1:], prepared.affine, centre)
    logits = torch.nn.functional.one_hot(torch.from_numpy(label_pre).long(), 3).permute(3, 0, 1, 2).float()
    back = logits_to_labels(logits, prepared.affine, affine, shape)
    expected = _world_label(shape, affine, centre)
    assert back.shape == shape and back.dtype == np.uint8
    if np.allclose(np.abs(affine[:3, :3]), np.diag(np.abs(np.diag(affine[:3, :3])))):
        np.testing.assert_array_equal(back, expected)  # a pure flip/permutation is exact
    else:
        # oblique: the RAS grid only approximates the rotated one; disagreement stays at boundaries
        assert (back == expected).mean() > 0.97
        for cls in (1, 2):
            inter = np.logical_and(back == cls, expected == cls).sum()
            assert 2 * inter / ((back == cls).sum() + (expected == cls).sum()) > 0.9


def _ball_scores(shape, affine, centre, scale: float) -> torch.Tensor:
    """Smooth class scores (signed distance to each ball's surface, background 0), like real logits."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    scores = [np.zeros(len(xyz))]
    for offset, radius in (([8, 0, 0], 14), ([-10, -4, 0], 9)):
        scores.append(radius * scale - np.linalg.norm(xyz - centre - np.array(offset) * scale, axis=1))
    return torch.from_numpy(np.stack(scores).reshape(3, *shape)).float()


def test_resampled_prediction_keeps_world_positions():
    """Through a real resampling (3 mm -> 6 mm -> 3 mm) each class stays where it was in space."""
    shape, affine = (64, 60, 50), np.diag([3.0, 3.0, 3.0, 1.0])
    prepared = prepare_volume(np.zeros(shape, np.float32), affine, _config().data)
    assert np.allclose(prepared.spacing, 6.0, atol=1e-4)
    centre = _grid_centre(shape, affine)
    logits = _ball_scores(prepared.image.shape[1:], prepared.affine, centre, scale=2.0)
    back = logits_to_labels(logits, prepared.affine, affine, shape, slab_voxels=20000)  # many slabs
    expected = _ball_scores(shape, affine, centre, scale=2.0).argmax(0).numpy()
    assert (back == expected).mean() > 0.995


def test_boundary_only_resampling_equals_full_trilinear(monkeypatch):
    """The fast path for non-oblique grids gives exactly the labels of trilinear ``grid_sample``."""
    from HyperSORTLib.inference import geometry

    logits = torch.randn(4, 17, 15, 9, generator=torch.Generator().manual_seed(0))
    src = np.diag([2.0, 2.0, 3.0, 1.0])
    dst = np.zeros((4, 4))
    dst[0, 1], dst[1, 2], dst[2, 0], dst[3, 3] = 0.7, -0.9, 1.3, 1.0  # permuted, flipped, rescaled
    dst[:3, 3] = [-1.0, 12.0, 2.0]
    assert geometry._axis_permutation(np.linalg.solve(src, dst)) == [2, 0, 1]
    fast = logits_to_labels(logits, src, dst, (30, 25, 20), slab_voxels=1000)
    monkeypatch.setattr(geometry, "_axis_permutation", lambda transform: None)
    reference = logits_to_labels(logits, src, dst, (30, 25, 20))
    np.testing.assert_array_equal(fast, reference)


@pytest.mark.parametrize("intensity", ["window", "percentile"])
def test_inference_preprocessing_matches_training(intensity):
    """A scan given as array + affine is preprocessed exactly as a training case read from disk."""
    from HyperSORTLib.data.preprocessing import volume_transforms

    path = REAL_SCANS["body_3mm"]
    if not path.is_file():
        pytest.skip(f"{path} not available")
    config = dataclasses.replace(_config().data, spacing=(4.5, 5.0, 4.0), intensity=intensity)
    trained = volume_transforms(config, keys=("image",))({"image": str(path)})["image"]
    image = nib.load(str(path))
    prepared = prepare_volume(np.asarray(image.dataobj), image.affine, config)
    assert tuple(prepared.image.shape) == tuple(trained.shape)
    np.testing.assert_allclose(prepared.image.numpy(), trained.numpy(), atol=1e-5)
    np.testing.assert_allclose(prepared.affine, np.asarray(trained.affine), atol=1e-6)


def test_bad_scans_give_clear_errors(tiny_run, tmp_path):
    seg = InteractiveSegmenter.load(tiny_run, device="cpu")
    with pytest.raises(ScanError, match="3-D"):
        seg.set_volume(np.zeros((32, 32), np.float32), np.eye(4))
    with pytest.raises(ScanError, match="single slice"):
        seg.set_volume(np.zeros((32, 32, 1), np.float32), np.eye(4))
    with pytest.raises(ScanError, match="NaN"):
        seg.set_volume(np.full((8, 8, 8), np.nan, np.float32), np.eye(4))
    with pytest.raises(ScanError, match="spacing"):
        seg.set_volume(np.zeros((8, 8, 8), np.float32), np.diag([0.0, 1, 1, 1]))
    with pytest.raises(ValueError, match="set_volume"):
        seg.segment(seg.main_mode())


# ----------------------------------------------------------------------------- decoding
def test_sample_latent_reproduces_training_prediction(tiny_run):
    run = TrainedRun.load(tiny_run, device="cpu")
    cases = read_nnunet_folder(Path(json.loads((tiny_run / "config.json").read_text())["data_source"]["path"]))
    dataset = SegmentationCases(cases, training_transforms(run.config.data))
    for row in (0, 3):
        item = dataset[row]
        with torch.no_grad():
            trained = run.model(item["image"][None], torch.tensor([row]))  # the training-time forward pass
        labels = run.segment(item["image"][0], run.latent_of(item["case_id"]))
        np.testing.assert_array_equal(labels, trained.argmax(1)[0].numpy())


def test_interactive_segmenter_full_preview_cache_and_errors(tiny_run):
    seg = InteractiveSegmenter.load(tiny_run, device="cpu")
    assert seg.latents.shape == (4, seg.latent_dim) and seg.class_names == ("background", "ball_a", "ball_b")
    shape, affine = (50, 44, 40), _oblique_affine(spacing=(1.5, 1.5, 2.0))
    ct = np.random.default_rng(0).normal(0, 50, shape).astype(np.float32)
    seg.set_volume(ct, affine, key="ct:1")
    prepared_first = seg._prepared_volume(False)
    seg.set_volume(ct * 0, affine, key="ct:1")  # same key: the cached preprocessing is kept
    assert seg._prepared_volume(False) is prepared_first

    fractions = []
    full = seg.segment(seg.latent_of("case_001"), progress=fractions.append)
    assert full.array.shape == shape and np.array_equal(full.affine, affine)
    assert full.array.dtype == np.uint8 and full.array.max() < 3
    assert fractions and fractions[-1] == pytest.approx(1.0)
    assert set(seg.timings) >= {"hypernetwork", "unet", "resample", "total"}

    preview = seg.segment(seg.latent_of("case_001"), preview=True)
    assert np.allclose(np.linalg.norm(preview.affine[:3, :3], axis=0), 12.0, atol=1e-3)
    assert all(p < s for p, s in zip(preview.array.shape, shape))
    seg.preview_spacing = 6.0
    same_grid = seg.segment(seg.latent_of("case_001"), preview=True)
    assert np.allclose(np.linalg.norm(same_grid.affine[:3, :3], axis=0), 6.0, atol=1e-3)

    with pytest.raises(InterruptedError):
        seg.segment(seg.main_mode(), cancel=lambda: True)
    with pytest.raises(ValueError, match="2 dimensions"):
        seg.segment([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="Cluster 42 does not exist"):
        seg.cluster_centre(42)
    with pytest.raises(ValueError, match="not a training case"):
        seg.latent_of("nope")
    seg.release()
    with pytest.raises(ValueError, match="set_volume"):
        seg.segment(seg.main_mode())


@pytest.mark.parametrize("name", sorted(REAL_SCANS))
def test_real_scans_come_back_on_their_exact_grid(tiny_run, name):
    path = REAL_SCANS[name]
    if not path.is_file():
        pytest.skip(f"{path} not available")
    image = nib.load(str(path))
    seg = InteractiveSegmenter.load(tiny_run, device="cpu")
    seg.set_volume(np.asarray(image.dataobj), image.affine, key=name)
    result = seg.segment(seg.main_mode())
    assert result.array.shape == image.shape
    assert np.array_equal(result.affine, image.affine)


# ----------------------------------------------------------------------------- the fast path
def _patient(shape=(60, 50, 30), spacing=(3.0, 3.0, 3.0), seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A CT of an elliptic body (soft tissue and two denser organs) in air, stored LPS."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = ((i + 0.1) / 0.55) ** 2 + (j / 0.45) ** 2 < 1
    ct = np.where(body, 40.0, -1000.0) + rng.normal(0, 20, shape)
    ct[body & (((i - 0.1) / 0.2) ** 2 + (j / 0.2) ** 2 + (k / 0.5) ** 2 < 1)] += 120
    ct[body & (((i + 0.3) / 0.12) ** 2 + ((j + 0.15) / 0.12) ** 2 + ((k + 0.2) / 0.4) ** 2 < 1)] += 200
    return ct.astype(np.float32), np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])


def _reference_labels(run: TrainedRun, volume, z, to_input_grid: bool) -> np.ndarray:
    """The path without the fast options: predict_logits' defaults over the whole grid."""
    logits = run.predict_logits(volume.image[None], run.decode(z))[0]
    if not to_input_grid:
        return logits.argmax(0).numpy().astype(np.uint8)
    return logits_to_labels(logits, volume.affine, volume.input_affine, volume.input_shape)


@pytest.mark.parametrize("preview", [False, True], ids=["full", "preview"])
def test_fast_path_labels_equal_the_reference_path(tiny_run, preview):
    """Batched windows, the channels-last layout, inference mode and the caches change no label;
    the body crop changes none inside the body box: it is the reference path run on the box.
    (Mixed precision, which changes rounding, is compared in the test after this one.)"""
    run = TrainedRun.load(tiny_run, device="cpu")
    ct, affine = _patient()
    z = run.latent_of("case_002")
    exact = InteractiveSegmenter(run, crop_to_body=False, sw_batch_size=3, channels_last=True,
                                 mixed_precision=False)
    exact.set_volume(ct, affine)
    volume = exact._prepared_volume(preview)
    if not preview:
        assert all(n > p for n, p in zip(volume.image.shape[1:3], run.config.data.patch_size))  # sliding windows
    np.testing.assert_array_equal(exact.segment(z, preview=preview).array,
                                  _reference_labels(run, volume, z, not preview))

    fast = InteractiveSegmenter(run, sw_batch_size=3, mixed_precision=False)
    fast.set_volume(ct, affine)
    box = fast._prepared_volume(preview).body
    grid = volume.image.shape[1:]
    assert all(b.stop - b.start < n for b, n in zip(box[:2], grid[:2]))  # the air is cropped in-plane
    cropped = dataclasses.replace(volume, image=volume.image[(slice(None), *box)])
    crop_logits = run.predict_logits(cropped.image[None], run.decode(z))[0]
    result = fast.segment(z, preview=preview)
    if preview:  # labels stay on the preprocessed grid: the box's labels in a background grid
        expected = np.zeros(grid, np.uint8)
        expected[box] = crop_logits.argmax(0).numpy()
        np.testing.assert_array_equal(result.array, expected)
        return
    crop_affine = volume.affine.copy()
    crop_affine[:3, 3] += volume.affine[:3, :3] @ [b.start for b in box]
    inside, outside = _box_regions(ct.shape, affine, crop_affine, crop_logits.shape[1:])
    assert result.array.shape == ct.shape and inside.any() and outside.any()
    expected = logits_to_labels(crop_logits, crop_affine, affine, ct.shape)
    np.testing.assert_array_equal(result.array[inside], expected[inside])
    assert not result.array[outside].any()  # background around the body box


@pytest.mark.parametrize("preview", [False, True], ids=["full", "preview"])
def test_mixed_precision_labels_agree_with_float32(tiny_run, preview):
    """Under mixed precision the UNet runs in the device's native 16-bit type (bfloat16 on CPUs that
    have it; by default for previews only on CPU): the logits change by rounding only, and the
    labels agree with the float32 ones."""
    run = TrainedRun.load(tiny_run, device="cpu")
    ct, affine = _patient()
    z = run.latent_of("case_002")
    labels = {}
    for mixed in (False, True):
        seg = InteractiveSegmenter(run, mixed_precision=mixed)
        seg.set_volume(ct, affine)
        labels[mixed] = seg.segment(z, preview=preview).array
    default = InteractiveSegmenter(run)  # on CPU: previews in the 16-bit type, full resolution in float32
    assert default.uses_mixed_precision(preview=True) and not default.uses_mixed_precision(preview=False)
    assert default.precision(False) == "float32"
    foreground = (labels[False] > 0) | (labels[True] > 0)
    assert foreground.sum() > 50
    assert (labels[False] == labels[True])[foreground].mean() > 0.95  # 0.98 on this barely trained UNet
    volume = seg._prepared_volume(preview)
    unet = run.decode(z)
    exact = run.predict_logits(volume.image[None], unet)
    mixed = run.predict_logits(volume.image[None], unet, mixed_precision=True)
    assert mixed.dtype == torch.float32 and mixed.shape == exact.shape
    spread = float(exact.abs().max())
    if autocast_dtype("cpu") is None:  # a processor without bfloat16: float32 both times
        assert torch.equal(mixed, exact)
    else:  # bfloat16 keeps 8 bits of mantissa: changed, by about 1 % of the logits' range at most
        assert not torch.equal(mixed, exact)
        assert float((mixed - exact).abs().max()) < 0.05 * spread


def _box_regions(shape, affine, box_affine, box_shape) -> tuple[np.ndarray, np.ndarray]:
    """Voxels of the input grid whose centre lies in the box more than one box voxel from its edge,
    and those more than one box voxel outside it (between them scores blend across the edge)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    to_box = np.linalg.solve(box_affine, affine)
    u = ijk @ to_box[:3, :3].T + to_box[:3, 3]
    inside = ((u >= 1) & (u <= np.array(box_shape) - 2)).all(1)
    outside = ((u < -1) | (u > np.array(box_shape))).any(1)
    return inside.reshape(shape), outside.reshape(shape)


def test_a_latent_segmented_again_reuses_its_labels(tiny_run):
    run = TrainedRun.load(tiny_run, device="cpu")
    seg = InteractiveSegmenter(run)
    ct, affine = _patient()
    seg.set_volume(ct, affine, key="a")
    first = seg.segment(run.latent_of("case_000"))
    assert not seg.reused
    first.array[:] = 7  # the caller's copy: changing it changes nothing kept
    again = seg.segment(run.latent_of("case_000"))
    assert seg.reused and seg.timings["unet"] == 0.0 and again.array.max() < 3
    np.testing.assert_array_equal(again.array, seg.segment(run.latent_of("case_000")).array)
    seg.segment(run.latent_of("case_001"))
    assert not seg.reused
    seg.set_volume(ct + 1, affine, key="b")  # another scan: nothing is reused
    seg.segment(run.latent_of("case_000"))
    assert not seg.reused


def test_body_box_covers_every_dense_voxel_on_an_oblique_grid():
    from HyperSORTLib.inference.geometry import body_box

    ct, _ = _patient(shape=(40, 36, 30))
    affine = _oblique_affine(spacing=(2.0, 2.5, 3.0))
    prepared = prepare_volume(ct, affine, dataclasses.replace(_config().data, spacing=(4.0, 4.0, 4.0)))
    box = prepared.body
    grid = prepared.image.shape[1:]
    dense = np.argwhere(ct > -500)
    to_grid = np.linalg.solve(prepared.affine, affine)
    u = np.rint(dense @ to_grid[:3, :3].T + to_grid[:3, 3]).astype(int)
    for axis, b in enumerate(box):
        assert b.start <= u[:, axis].min() and u[:, axis].max() < b.stop
    assert np.prod([b.stop - b.start for b in box]) < 0.9 * np.prod(grid)
    whole = tuple(slice(0, n) for n in grid)
    assert body_box(np.full(ct.shape, -1000.0), affine, prepared.affine, grid) == whole  # no patient: no crop
    assert body_box(np.full(ct.shape, 500.0), affine, prepared.affine, grid) == whole


# ----------------------------------------------------------------------------- command line
def _save_scan(path: Path, shape=(36, 30, 28), affine=None, seed: int = 1) -> Path:
    affine = _oblique_affine() if affine is None else affine
    ct = np.random.default_rng(seed).normal(0, 40, shape).astype(np.int16)
    image = nib.Nifti1Image(ct, affine)
    image.header.set_qform(affine, code=1)
    nib.save(image, path)
    return path


def _segment(run: Path, scan: Path, output: Path, *extra: str) -> int:
    return main(["segment", "--run", str(run), "--input", str(scan), "--output", str(output), "--device", "cpu",
                 "--no-progress", *extra])


def test_hypersort_segment_writes_labels_on_the_input_grid(tiny_run, tmp_path):
    scan = _save_scan(tmp_path / "ct.nii.gz")
    out = tmp_path / "out" / "seg.nii.gz"
    assert _segment(tiny_run, scan, out, "--sample", "case_002") == 0
    written, source = nib.load(str(out)), nib.load(str(scan))
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    assert written.get_data_dtype() == np.uint8


def test_hypersort_segment_sidecar_names_classes_and_latent(tiny_run, tmp_path):
    scan = _save_scan(tmp_path / "ct.nii.gz")
    assert _segment(tiny_run, scan, tmp_path / "seg.nii.gz", "--sample", "case_002") == 0
    sidecar = json.loads((tmp_path / "seg.json").read_text())
    assert sidecar["labels"] == {"0": "background", "1": "ball_a", "2": "ball_b"}
    assert sidecar["latent_source"] == "sample case_002" and len(sidecar["latent"]) == 2
    assert sidecar["written_by"] == "hypersort segment"
    assert sidecar["precision"] == "float32"  # full resolution on CPU, by default


@pytest.mark.parametrize("flag,mixed", [("--float32", False), ("--mixed-precision", True)])
def test_hypersort_segment_precision_flags_give_that_precision(tiny_run, tmp_path, flag, mixed):
    scan = _save_scan(tmp_path / "ct.nii.gz")
    assert _segment(tiny_run, scan, tmp_path / "seg.nii.gz", "--sample", "case_002", "--preview", flag) == 0
    seg = InteractiveSegmenter(TrainedRun.load(tiny_run, device="cpu"), mixed_precision=mixed)
    assert json.loads((tmp_path / "seg.json").read_text())["precision"] == seg.precision(True)
    array, affine, _ = load_scan(scan)
    seg.set_volume(array, affine)
    expected = seg.segment(seg.latent_of("case_002"), preview=True, to_input_grid=True).array
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "seg.nii.gz")).dataobj), expected)


def test_hypersort_segment_preview_is_written_on_the_input_grid(tiny_run, tmp_path):
    scan = _save_scan(tmp_path / "ct.nii.gz")
    assert _segment(tiny_run, scan, tmp_path / "prev.nii.gz", "--latent", "0.0,0.0", "--preview") == 0
    assert nib.load(str(tmp_path / "prev.nii.gz")).shape == nib.load(str(scan)).shape


def test_hypersort_segment_latent_may_start_with_a_minus_sign(tiny_run, tmp_path):
    scan = _save_scan(tmp_path / "ct.nii.gz")
    assert _segment(tiny_run, scan, tmp_path / "a.nii.gz", "--latent", "-0.4,0.1", "--preview") == 0
    assert _segment(tiny_run, scan, tmp_path / "b.nii.gz", "--latent=-0.4,0.1", "--preview") == 0
    for name in ("a.json", "b.json"):
        assert json.loads((tmp_path / name).read_text())["latent"] == pytest.approx([-0.4, 0.1])
    assert np.array_equal(np.asanyarray(nib.load(str(tmp_path / "a.nii.gz")).dataobj),
                          np.asanyarray(nib.load(str(tmp_path / "b.nii.gz")).dataobj))


@pytest.mark.parametrize("extra, message", [
    (["--latent", "1,2,3"], "expects 2 comma-separated numbers"),
    (["--latent", "a,b"], "expects 2 comma-separated numbers"),
    (["--latent", "-1,2,3"], "expects 2 comma-separated numbers"),
    (["--cluster", "99"], "Cluster 99 does not exist"),
    (["--sample", "case_999"], "not a training case"),
])
def test_hypersort_segment_rejects_bad_latents(tiny_run, tmp_path, capsys, extra, message):
    nib.save(nib.Nifti1Image(np.zeros((12, 12, 12), np.int16), np.eye(4)), tmp_path / "ct.nii.gz")
    assert _segment(tiny_run, tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "seg.nii.gz").exists()


def test_hypersort_segment_rejects_a_2d_scan(tiny_run, tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.zeros((12, 12), np.int16), np.eye(4)), tmp_path / "flat.nii.gz")
    assert _segment(tiny_run, tmp_path / "flat.nii.gz", tmp_path / "seg.nii.gz") == 2
    assert "3-D" in capsys.readouterr().err


def test_hypersort_segment_rejects_a_file_that_is_not_nifti(tiny_run, tmp_path, capsys):
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    assert _segment(tiny_run, tmp_path / "broken.nii.gz", tmp_path / "seg.nii.gz") == 2
    err = capsys.readouterr().err
    assert "broken.nii.gz" in err and "cannot read the header" in err and len(err.strip().splitlines()) == 1


def test_hypersort_segment_rejects_a_run_of_another_format(tiny_run, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    doc = json.loads((tiny_run / "config.json").read_text())
    doc["format_version"] = 999
    (foreign / "config.json").write_text(json.dumps(doc))
    nib.save(nib.Nifti1Image(np.zeros((12, 12, 12), np.int16), np.eye(4)), tmp_path / "ct.nii.gz")
    assert _segment(foreign, tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz") == 2
    assert "run format 999" in capsys.readouterr().err


# ----------------------------------------------------------------------------- outputs never destroy data
@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_hypersort_segment_never_writes_over_its_input(tiny_run, tmp_path, capsys, spelling):
    (tmp_path / "d").mkdir()
    scan = _save_scan(tmp_path / "d" / "ct.nii.gz")
    before = scan.read_bytes()
    output = {"same": scan, "dotdot": tmp_path / "d" / ".." / "d" / "ct.nii.gz",
              "symlink": tmp_path / "link.nii.gz", "hardlink": tmp_path / "hard.nii.gz"}[spelling]
    if spelling == "symlink":
        output.symlink_to(scan)
    elif spelling == "hardlink":
        output.hardlink_to(scan)
    assert _segment(tiny_run, scan, output, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "is the input" in err and "even with --overwrite" in err
    assert scan.read_bytes() == before and not (tmp_path / "d" / "ct.json").exists()


def test_hypersort_segment_refuses_an_existing_output_without_overwrite(tiny_run, tmp_path, capsys):
    scan = _save_scan(tmp_path / "ct.nii.gz")
    output = tmp_path / "seg.nii.gz"
    output.write_bytes(b"user data")
    assert _segment(tiny_run, scan, output) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert output.read_bytes() == b"user data" and not (tmp_path / "seg.json").exists()


def test_hypersort_segment_refuses_an_existing_sidecar_without_overwrite(tiny_run, tmp_path, capsys):
    scan = _save_scan(tmp_path / "ct.nii.gz")
    assert _segment(tiny_run, scan, tmp_path / "seg.nii.gz", "--preview") == 0
    (tmp_path / "seg.nii.gz").unlink()
    sidecar = (tmp_path / "seg.json").read_bytes()
    assert _segment(tiny_run, scan, tmp_path / "seg.nii.gz", "--preview") == 2
    assert "seg.json already exists" in capsys.readouterr().err
    assert (tmp_path / "seg.json").read_bytes() == sidecar and not (tmp_path / "seg.nii.gz").exists()


def test_hypersort_segment_overwrite_replaces_its_own_output(tiny_run, tmp_path):
    scan = _save_scan(tmp_path / "ct.nii.gz")
    output = tmp_path / "seg.nii.gz"
    assert _segment(tiny_run, scan, output, "--sample", "case_000", "--preview") == 0
    assert _segment(tiny_run, scan, output, "--sample", "case_001", "--preview", "--overwrite") == 0
    assert json.loads((tmp_path / "seg.json").read_text())["latent_source"] == "sample case_001"
    assert nib.load(str(output)).shape == nib.load(str(scan)).shape


def test_hypersort_segment_never_replaces_a_foreign_sidecar(tiny_run, tmp_path, capsys):
    """``--output RUN/config.nii.gz`` would put its sidecar over the run's config.json."""
    run_copy = tmp_path / "run"
    run_copy.mkdir()
    config = run_copy / "config.json"
    config.write_bytes((tiny_run / "config.json").read_bytes())
    scan = _save_scan(tmp_path / "ct.nii.gz")
    assert _segment(tiny_run, scan, run_copy / "config.nii.gz", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "config.json exists and was not written by hypersort segment" in err
    assert config.read_bytes() == (tiny_run / "config.json").read_bytes()
    assert not (run_copy / "config.nii.gz").exists()


def test_hypersort_segment_output_must_be_a_file_in_a_folder(tiny_run, tmp_path, capsys):
    scan = _save_scan(tmp_path / "ct.nii.gz")
    (tmp_path / "folder.nii.gz").mkdir()
    assert _segment(tiny_run, scan, tmp_path / "folder.nii.gz", "--overwrite") == 2
    assert "is an existing folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert _segment(tiny_run, scan, tmp_path / "afile" / "seg.nii.gz") == 2
    err = capsys.readouterr().err
    assert "afile is a file, not a folder" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- preview spacing
def test_hypersort_segment_rejects_an_absurd_preview_spacing(tiny_run, tmp_path, capsys):
    scan = _save_scan(tmp_path / "ct.nii.gz")
    assert _segment(tiny_run, scan, tmp_path / "seg.nii.gz", "--preview", "--preview-spacing", "0.001") == 2
    err = capsys.readouterr().err
    assert "--preview-spacing" in err and "0.05..20.0 mm" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "seg.nii.gz").exists()


@pytest.mark.parametrize("spacing", [0.001, 0.0, -1.0, float("nan"), 500.0, (1.0, 1.0)])
def test_preview_spacing_outside_the_range_is_refused_by_the_library(tiny_run, spacing):
    seg = InteractiveSegmenter.load(tiny_run, device="cpu")
    with pytest.raises(ScanError, match="preview spacing"):
        seg.preview_spacing = spacing


def test_preview_spacing_that_would_not_fit_in_memory_is_refused(tiny_run):
    seg = InteractiveSegmenter.load(tiny_run, device="cpu")
    seg.set_volume(np.zeros((64, 64, 64), np.float32), np.eye(4))
    with pytest.raises(ScanError, match=r"1067x1067x1067 grid .*Choose a coarser spacing"):
        seg.preview_spacing = 0.06
    seg.preview_spacing = 4.0  # a sane one is accepted
    assert seg.preview_spacing == (4.0, 4.0, 4.0)


def test_single_pass_runs_a_volume_larger_than_the_patch_in_one_unet_call(tiny_run):
    """Up to ``single_pass_voxels`` a volume beyond the patch size runs once as it is, as a volume
    inside the patch does; above it (and by default) it goes through sliding windows."""
    run = TrainedRun.load(tiny_run, device="cpu")
    patch = run.config.data.patch_size
    divisor = run.config.model.unet.divisor
    shape = (patch[0] + divisor + 1, patch[1], patch[2])  # one axis beyond the patch, not a multiple
    image = torch.from_numpy(np.random.default_rng(0).random((1, 1, *shape), dtype=np.float32))
    unet = run.decode(run.latent_of("case_002"))
    calls = []
    original = unet.forward
    unet.forward = lambda x: (calls.append(tuple(x.shape[2:])), original(x))[1]
    one = run.predict_logits(image, unet, single_pass_voxels=int(np.prod(shape)))
    assert calls == [shape]  # not padded to a multiple of the divisor
    torch.testing.assert_close(one, original(image))
    calls.clear()
    windowed = run.predict_logits(image, unet, single_pass_voxels=int(np.prod(shape)) - 1)
    assert len(calls) == 2 and all(c == tuple(patch) for c in calls)
    assert windowed.shape == one.shape
    calls.clear()
    run.predict_logits(image, unet)  # the default: windows as in training
    assert len(calls) == 2
    with pytest.raises(ValueError, match="single_pass_voxels"):
        InteractiveSegmenter(run, single_pass_voxels=-1)
