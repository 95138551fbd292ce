"""Preprocessing (RAS, spacing, intensity), patch sampling, the disk cache and mapping back to the scan."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai import transforms as mt

from conftest import tiny_config, write_sphere_dataset
from data_helpers import TS_IDS, Killed, abdomen, kill_after, make_nnunet, make_totalsegmentator, requires_ct
from HyperSORTLib.config import DataConfig
from HyperSORTLib.data import SegmentationCases, read_dataset, training_transforms
from HyperSORTLib.data.cache import PreprocessCache
from HyperSORTLib.data.dataset import PreprocessedCases
from HyperSORTLib.data.preprocessing import (extract_patch, patch_rng, patch_start, preprocess_case,
                                             resample_to_reference)
from HyperSORTLib.training import Trainer
from HyperSORTLib import rundir

CT_CONFIG = DataConfig(class_names=(), spacing=(8.0, 8.0, 8.0), patch_size=(24, 24, 16), intensity="window",
                       window=(-200.0, 300.0))


@pytest.fixture(scope="module")
def nnunet(tmp_path_factory) -> Path:
    return make_nnunet(tmp_path_factory.mktemp("pre") / "nnunet")


@requires_ct
def test_lps_and_ras_copies_preprocess_identically(tmp_path):
    """The same scan stored RAS and LPS gives the same RAS volume (orientation + spacing)."""
    root = make_nnunet(tmp_path / "d", cases=(("a", 0, "ras"), ("b", 0, "lps")))
    cl = read_dataset(root)
    config = dataclasses.replace(CT_CONFIG, spacing=(5.0, 5.0, 5.0), intensity="percentile")
    a, b = (preprocess_case(c, cl, config) for c in cl.cases)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.label.max() == 3 and a.image.min() >= 0 and a.image.max() <= 1
    assert nib.aff2axcodes(a.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.abs(np.diag(a.affine)[:3]), 5.0)


@requires_ct
def test_prediction_maps_back_to_original_grid(tmp_path):
    """A label map on the preprocessed grid resampled onto an oblique LPS scan: exact shape and affine."""
    root = make_totalsegmentator(tmp_path / "ts", subjects=(("s1", 0, "oblique", "train"),))
    cl = read_dataset(root, classes=["liver", "spleen"])
    case = cl.cases[0]
    volume = preprocess_case(case, cl, dataclasses.replace(CT_CONFIG, spacing=(4.0, 4.0, 4.0)))
    original = nib.load(str(case.image))
    back = resample_to_reference(volume.label, volume.affine, original)
    assert back.shape == original.shape
    np.testing.assert_array_equal(back.affine, original.affine)
    assert back.get_data_dtype() == np.uint8
    _, source, _ = abdomen(0, "oblique")
    restored = np.asanyarray(back.dataobj)
    for value, organ in ((1, "liver"), (2, "spleen")):
        truth = source == TS_IDS[organ]
        dice = 2 * (truth & (restored == value)).sum() / (truth.sum() + (restored == value).sum())
        assert dice > 0.85, (organ, dice)
    probabilities = resample_to_reference(np.stack([volume.image, volume.image]), volume.affine, case.image,
                                          mode="bilinear")
    assert probabilities.shape == (*original.shape, 2) and probabilities.get_data_dtype() == np.float32


def test_centre_patch_matches_monai_pad_and_crop():
    rng = np.random.default_rng(0)
    for shape, patch in (((17, 9, 30), (16, 16, 16)), ((18, 20, 5), (15, 8, 8)), ((8, 8, 8), (8, 8, 8))):
        volume = rng.normal(size=shape).astype(np.float32)
        expected = mt.Compose([mt.SpatialPad(patch), mt.CenterSpatialCrop(patch)])(torch.from_numpy(volume[None]))
        start = patch_start(shape, patch, "center", None)
        np.testing.assert_array_equal(extract_patch(volume, start, patch), np.asarray(expected[0]))


def test_random_and_label_patches():
    label = np.zeros((40, 30, 20), np.uint8)
    label[30:34, 3:6, 15:18] = 2
    volume = np.arange(label.size, dtype=np.float32).reshape(label.shape)
    from HyperSORTLib.data.preprocessing import foreground_samples

    fg = foreground_samples(label)
    assert set(fg[:, 0]) == {2} and len(fg) == 36
    starts = set()
    for epoch in range(6):
        start = patch_start(label.shape, (16, 16, 8), "label", patch_rng(0, epoch, 3), fg)
        assert start == patch_start(label.shape, (16, 16, 8), "label", patch_rng(0, epoch, 3), fg)  # reproducible
        assert extract_patch(label, start, (16, 16, 8)).any()  # the patch holds the annotation
        starts.add(start)
        rstart = patch_start(label.shape, (16, 16, 8), "random", patch_rng(0, epoch, 3))
        assert all(0 <= s <= n - p for s, n, p in zip(rstart, label.shape, (16, 16, 8)))
        patch = extract_patch(volume, rstart, (16, 16, 8))
        assert patch[0, 0, 0] == volume[rstart]  # no padding needed: the window itself
    assert len(starts) > 1
    # label_center: the annotation's box centre, every epoch
    from HyperSORTLib.data.preprocessing import bounding_box

    box = bounding_box(label)
    assert box == ((30, 3, 15), (33, 5, 17))
    start = patch_start(label.shape, (16, 16, 8), "label_center", None, foreground_box=box)
    assert start == (32 - 8, 0, 16 - 4)
    assert extract_patch(label, start, (16, 16, 8)).sum() == label.sum()  # the whole annotation is inside
    assert patch_start(label.shape, (16, 16, 8), "label_center", None) == patch_start(
        label.shape, (16, 16, 8), "center", None)  # empty label: the scan's centre
    # without foreground, label sampling falls back to random placement (still in range)
    start = patch_start(label.shape, (16, 16, 8), "label", patch_rng(1, 0, 0), fg[:0])
    assert all(0 <= s <= n - p for s, n, p in zip(start, label.shape, (16, 16, 8)))


def test_scale_augmentation_zooms_image_and_label_together(tmp_path):
    """Scale augmentation: the patch keeps its shape, the anatomy changes size with the drawn
    factors, image and label stay registered, the draw is a function of (seed, epoch, index), and
    the analysis reads the un-zoomed patch."""
    from HyperSORTLib.analysis.inputs import analysis_patch_config
    from HyperSORTLib.data.preprocessing import sample_patch

    shape = (40, 32, 24)
    label = np.zeros(shape, np.uint8)
    label[12:28, 10:22, 8:16] = 1  # a 16 x 12 x 8 box at the centre
    image = label.astype(np.float32)
    config = dataclasses.replace(CT_CONFIG, patch_size=shape, patch_sampling="center", scale_augmentation=0.25)
    plain = sample_patch(image, label, dataclasses.replace(config, scale_augmentation=0.0), None)
    np.testing.assert_array_equal(plain[1], label)  # off: the volume itself, no generator needed
    with pytest.raises(ValueError, match="random generator"):
        sample_patch(image, label, config, None)
    sizes = []
    for epoch in range(8):
        img, lab = sample_patch(image, label, config, patch_rng(3, epoch, 2))
        again = sample_patch(image, label, config, patch_rng(3, epoch, 2))
        np.testing.assert_array_equal(lab, again[1])  # reproducible
        assert img.shape == lab.shape == shape and lab.dtype == np.uint8 and img.dtype == np.float32
        factors = patch_rng(3, epoch, 2).uniform(0.75, 1.25, size=3)
        extent = [int(np.any(lab, axis=tuple(a for a in range(3) if a != axis)).sum()) for axis in range(3)]
        expected = [n * f for n, f in zip((16, 12, 8), factors)]
        assert all(abs(e - x) <= 1.5 for e, x in zip(extent, expected)), (extent, expected)
        # registered: the label covers exactly where the zoomed image is mostly foreground
        assert np.mean((img > 0.5) == (lab == 1)) > 0.98
        sizes.append(int(lab.sum()))
    assert len(set(sizes)) == 8 and min(sizes) < label.sum() < max(sizes)
    analysis = analysis_patch_config(config)
    assert analysis.scale_augmentation == 0.0 and analysis.patch_sampling == "center"
    # the training dataset draws the zoom per visit even with deterministic placement
    root = write_sphere_dataset(tmp_path / "spheres", n_cases=2)
    cl = read_dataset(root)
    data = dataclasses.replace(tiny_config().data, scale_augmentation=0.2)
    dataset = PreprocessedCases(cl, data)
    first, second = dataset[(0, 1, 0)]["label"], dataset[(0, 2, 0)]["label"]
    assert first.shape == second.shape == (1, *data.patch_size)
    assert torch.equal(first, dataset[(0, 1, 0)]["label"]) and not torch.equal(first, second)
    with pytest.raises(ValueError, match="scale_augmentation"):
        DataConfig(scale_augmentation=1.0)


def _linear_resize(volume: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Trilinear resize with half-voxel centres (``align_corners=False``), axis by axis in float64."""
    out = volume.astype(np.float64)
    for axis, n_out in enumerate(size):
        n_in = out.shape[axis]
        source = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        weight = (source - low).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, low, axis=axis) * (1.0 - weight) + np.take(out, high, axis=axis) * weight
    return out


def test_the_zoomed_image_is_interpolated_in_float64_and_rounded_once():
    """The zoom's trilinear interpolation does not depend on the rounding of torch's float32
    kernels (which changes between torch releases): the patch is the float64 interpolation
    rounded to float32, bit for bit."""
    from HyperSORTLib.data.preprocessing import sample_patch

    image = np.random.default_rng(0).normal(0.0, 100.0, size=(30, 26, 20)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    config = dataclasses.replace(CT_CONFIG, patch_size=(24, 20, 16), patch_sampling="center",
                                 scale_augmentation=0.3)
    for epoch in range(4):
        patch, _ = sample_patch(image, label, config, patch_rng(5, epoch, 1))
        rng = patch_rng(5, epoch, 1)
        window = tuple(int(round(p / f)) for p, f in zip(config.patch_size, rng.uniform(0.7, 1.3, size=3)))
        cut = extract_patch(image, patch_start(image.shape, window, "center", rng), window)
        assert window != config.patch_size
        np.testing.assert_array_equal(patch, _linear_resize(cut, config.patch_size).astype(np.float32))


def test_noise_augmentation_changes_the_image_per_visit_and_never_the_label(tmp_path):
    """Noise augmentation: fresh noise of the configured strength at every visit, a function of
    (seed, epoch, index), the label untouched, and the analysis reads the patch without it."""
    from HyperSORTLib.analysis.inputs import analysis_patch_config
    from HyperSORTLib.data.preprocessing import sample_patch

    shape = (20, 16, 12)
    label = np.zeros(shape, np.uint8)
    label[5:15, 4:12, 3:9] = 2
    image = np.where(label > 0, 0.6, 0.2).astype(np.float32)
    config = dataclasses.replace(CT_CONFIG, patch_size=shape, patch_sampling="center", noise_augmentation=0.05)
    with pytest.raises(ValueError, match="random generator"):
        sample_patch(image, label, config, None)
    first = sample_patch(image, label, config, patch_rng(1, 4, 7))
    np.testing.assert_array_equal(first[1], label)  # the annotation never changes
    np.testing.assert_array_equal(first[0], sample_patch(image, label, config, patch_rng(1, 4, 7))[0])
    residual = first[0] - image
    assert first[0].dtype == np.float32 and abs(residual.mean()) < 0.005 and 0.045 < residual.std() < 0.055
    later = sample_patch(image, label, config, patch_rng(1, 5, 7))[0]  # another epoch: other noise
    assert np.corrcoef(residual.ravel(), (later - image).ravel())[0, 1] < 0.1
    analysis = analysis_patch_config(config)
    assert analysis.noise_augmentation == 0.0 and analysis.patch_sampling == "center"
    # the training dataset draws it per visit with the deterministic centre patch too
    root = write_sphere_dataset(tmp_path / "spheres", n_cases=2)
    data = dataclasses.replace(tiny_config().data, noise_augmentation=0.1)
    dataset = PreprocessedCases(read_dataset(root), data)
    visit, other = dataset[(0, 1, 0)], dataset[(0, 2, 0)]
    assert torch.equal(visit["label"], other["label"]) and not torch.equal(visit["image"], other["image"])
    assert torch.equal(visit["image"], dataset[(0, 1, 0)]["image"])
    with pytest.raises(ValueError, match="noise_augmentation"):
        DataConfig(noise_augmentation=-0.1)


def test_preprocessed_cases_equal_segmentation_cases(tmp_path):
    root = write_sphere_dataset(tmp_path / "spheres", n_cases=3)
    cl = read_dataset(root)
    config = dataclasses.replace(tiny_config().data, spacing=(3.0, 2.5, 1.7), patch_size=(8, 24, 16),
                                 intensity="percentile")
    reference = SegmentationCases(cl, training_transforms(config))
    from_paths = training_transforms(config)({"image": str(cl.cases[0].image), "label": str(cl.cases[0].label)})
    torch.testing.assert_close(torch.as_tensor(from_paths["image"]), reference[0]["image"], rtol=0, atol=0)
    assert torch.equal(torch.as_tensor(from_paths["label"]).round().to(torch.uint8), reference[0]["label"])
    for cache in (None, PreprocessCache(tmp_path / "cache")):
        dataset = PreprocessedCases(cl, config, cache=cache)
        for i in range(len(cl)):
            torch.testing.assert_close(dataset[i]["image"], reference[i]["image"], rtol=0, atol=0)
            assert torch.equal(dataset[(i, 5, 1)]["label"], reference[i]["label"])
            assert dataset[i]["case_id"] == cl.case_ids[i] and dataset[i]["index"] == i


def _touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


@requires_ct
def test_cache_hits_and_invalidation(nnunet, tmp_path):
    cache = PreprocessCache(tmp_path / "cache")
    cl = read_dataset(nnunet)
    first = PreprocessedCases(cl, CT_CONFIG, cache=cache)
    assert first.cache_hits == 0
    assert not list((tmp_path / "cache").rglob("*.tmp")), "temporary files left behind"
    second = PreprocessedCases(cl, dataclasses.replace(CT_CONFIG, patch_size=(16, 16, 16), patch_sampling="random"),
                               cache=cache)
    assert second.cache_hits == len(cl)  # the patch is not part of the key
    for i in range(len(cl)):
        np.testing.assert_array_equal(np.asarray(first.volume(i).image), np.asarray(second.volume(i).image))
    fresh = preprocess_case(cl.cases[1], cl, CT_CONFIG)
    cached = second.volume(1)
    np.testing.assert_array_equal(fresh.label, cached.label)
    np.testing.assert_array_equal(fresh.foreground, cached.foreground)
    assert cached.foreground_box == fresh.foreground_box is not None
    np.testing.assert_allclose(cached.affine, fresh.affine)
    assert cached.original_shape == nib.load(str(cl.cases[1].image)).shape

    # a changed preprocessing setting or class selection is a different entry
    assert PreprocessedCases(cl, dataclasses.replace(CT_CONFIG, window=(-100.0, 200.0)), cache=cache).cache_hits == 0
    assert PreprocessedCases(read_dataset(nnunet, classes=["spleen"]), CT_CONFIG, cache=cache).cache_hits == 0

    # a changed source file (same bytes, newer mtime) is re-read; the others still hit
    _touch_later(cl.cases[2].label)
    third = PreprocessedCases(cl, CT_CONFIG, cache=cache)
    assert third.cache_hits == len(cl) - 1

    # an incomplete entry (array gone) is rebuilt, not read
    key = cache.case_key(cl.cases[0], cl, CT_CONFIG)
    cache.paths(key)[0].unlink()
    assert cache.load(key) is None
    fourth = PreprocessedCases(cl, CT_CONFIG, cache=cache)
    assert fourth.cache_hits == len(cl) - 1 and cache.load(key) is not None


class _KeyRecorder(torch.utils.data.Dataset):
    accepts_epoch_keys = True

    def __init__(self, dataset) -> None:
        self.dataset, self.keys = dataset, []

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        self.keys.append(tuple(key))
        return self.dataset[key]


@pytest.mark.parametrize("sampling", ["random", "label"])
def test_resumed_run_with_random_patches_is_identical(tmp_path, sampling):
    root = write_sphere_dataset(tmp_path / "spheres", n_cases=4, shape=(20, 18, 16))
    base = tiny_config(epochs=3)
    config = dataclasses.replace(base, data=dataclasses.replace(base.data, patch_size=(8, 8, 8),
                                                                patch_sampling=sampling, foreground_probability=0.7))
    cl = read_dataset(root)
    dataset = PreprocessedCases(cl, config.data, cache=PreprocessCache(tmp_path / "cache"))
    recorder = _KeyRecorder(dataset)
    Trainer(config, recorder, cl.case_ids, tmp_path / "full", progress=False).fit()
    assert sorted(set(recorder.keys)) == [(i, e, 0) for i in range(4) for e in range(3)]  # (index, epoch, seed)
    with pytest.raises(Killed):
        Trainer(config, dataset, cl.case_ids, tmp_path / "cut", callbacks=[kill_after(1)], progress=False).fit()
    Trainer(config, dataset, cl.case_ids, tmp_path / "cut", progress=False).fit()
    full, cut = (rundir.load_model_weights(tmp_path / d) for d in ("full", "cut"))
    for key in full:
        torch.testing.assert_close(full[key], cut[key], rtol=0, atol=0, msg=key)
    # the patches do move between epochs
    assert not torch.equal(dataset[(0, 0, 0)]["image"], dataset[(0, 1, 0)]["image"]) or \
        not torch.equal(dataset[(1, 0, 0)]["image"], dataset[(1, 1, 0)]["image"])


def test_worker_processes_give_the_same_run(tmp_path):
    root = write_sphere_dataset(tmp_path / "spheres", n_cases=4, shape=(20, 18, 16))
    base = tiny_config(epochs=2)
    config = dataclasses.replace(base, data=dataclasses.replace(base.data, patch_size=(8, 8, 8),
                                                                patch_sampling="random"))
    cl = read_dataset(root)
    dataset = PreprocessedCases(cl, config.data, cache=PreprocessCache(tmp_path / "cache"), workers=2)
    Trainer(config, dataset, cl.case_ids, tmp_path / "w0", progress=False).fit()
    workers = dataclasses.replace(config, train=dataclasses.replace(config.train, num_workers=2))
    Trainer(workers, dataset, cl.case_ids, tmp_path / "w2", progress=False).fit()
    a, b = (rundir.load_model_weights(tmp_path / d) for d in ("w0", "w2"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@requires_ct
def test_loading_a_case_logs_no_reader_warnings(nnunet, caplog):
    """Reading NIfTI builds no DICOM reader, whose GPU-decoder warning would repeat in every worker."""
    cl = read_dataset(nnunet)
    with caplog.at_level("WARNING"):
        preprocess_case(cl.cases[0], cl, CT_CONFIG)
    assert not [r for r in caplog.records if r.name.startswith("monai")], caplog.text
