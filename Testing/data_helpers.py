"""Mini datasets in every supported layout, cut from the real CT examples in ../shared/data.

The abdomen of ``totalsegmentator/A_example_ct_3mm`` (its TotalSegmentator prediction gives the
organs) is cropped and subsampled to 6 mm (about 50x36x28 voxels) and written in each layout,
in RAS, LPS and oblique orientations. ``C_aorta_crop_1p5mm`` (LPS on disk) provides a subject
with its real per-structure masks. :func:`corrupt` breaks a case in one of the ways the checks
must report.
"""

from __future__ import annotations

import gzip
import json
import shutil
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TS_EXAMPLES = SHARED_DATA / "ct-examples" / "totalsegmentator"

requires_ct = pytest.mark.skipif(not (TS_EXAMPLES / "A_example_ct_3mm").is_dir(),
                                 reason="real CT examples (../shared/data/ct-examples) not available")

#: TotalSegmentator v2 ids in the example label map.
TS_IDS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5, "stomach": 6, "pancreas": 7, "aorta": 52}
#: AMOS label values of the same organs.
AMOS_VALUES = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 6, "stomach": 7, "aorta": 8, "pancreas": 10}
AMOS_LABELS = {"0": "background", "1": "spleen", "2": "right kidney", "3": "left kidney", "4": "gall bladder",
               "5": "esophagus", "6": "liver", "7": "stomach", "8": "arota", "9": "postcava", "10": "pancreas",
               "11": "right adrenal gland", "12": "left adrenal gland", "13": "duodenum", "14": "bladder",
               "15": "prostate/uterus"}


@lru_cache(maxsize=None)
def _abdomen_source() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folder = TS_EXAMPLES / "A_example_ct_3mm"
    ct = nib.load(str(folder / "ct.nii.gz"))
    image = np.asanyarray(ct.dataobj).astype(np.int16)
    label = np.asanyarray(nib.load(str(folder / "label_total_fast_pred.nii.gz")).dataobj).astype(np.uint8)
    return image, label, np.asarray(ct.affine)


def abdomen(offset: int = 0, variant: str = "ras") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image int16, TotalSegmentator-id label uint8, affine)`` of the abdomen at 6 mm.

    ``offset`` shifts the crop (voxels of 3 mm) so cases differ; ``variant``: ``ras`` (as
    stored), ``lps`` (the same scan stored with x and y reversed: identical in space),
    ``oblique`` (rotated 25 degrees about z in its affine).
    """
    image, label, affine = _abdomen_source()
    start = np.array([8, 18, 56]) + offset
    window = tuple(slice(s, s + n, 2) for s, n in zip(start, (100, 72, 56)))
    image, label = image[window].copy(), label[window].copy()
    scale = np.diag([2.0, 2.0, 2.0, 1.0])
    scale[:3, 3] = start
    affine = affine @ scale
    if variant == "lps":
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[0, 3], flip[1, 3] = image.shape[0] - 1, image.shape[1] - 1
        image, label, affine = image[::-1, ::-1].copy(), label[::-1, ::-1].copy(), affine @ flip
    elif variant == "oblique":
        angle = np.deg2rad(25.0)
        rotation = np.eye(4)
        rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        affine = rotation @ affine
    elif variant != "ras":
        raise ValueError(variant)
    return image, label, affine


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.set_data_dtype(data.dtype)
    nib.save(image, str(path))
    return path


def organ_label(label: np.ndarray, organs: dict[str, int], values: dict[str, int] | None = None) -> np.ndarray:
    """Relabel a TotalSegmentator-id map: organ -> ``organs[organ]``, everything else 0."""
    out = np.zeros(label.shape, np.uint8)
    for organ, value in organs.items():
        out[label == TS_IDS[organ]] = value
    return out


NNUNET_CLASSES = ("liver", "spleen", "kidney_left")
VARIANTS = (("case_000", 0, "ras"), ("case_001", 3, "lps"), ("case_002", 5, "oblique"), ("case_003", 2, "ras"))


def make_nnunet(root: Path, cases=VARIANTS, classes=NNUNET_CLASSES) -> Path:
    """nnU-Net raw layout with ``classes`` as values 1..K; one case per ``(id, offset, variant)``."""
    for case_id, offset, variant in cases:
        image, label, affine = abdomen(offset, variant)
        save(root / "imagesTr" / f"{case_id}_0000.nii.gz", image, affine)
        save(root / "labelsTr" / f"{case_id}.nii.gz",
             organ_label(label, {c: i + 1 for i, c in enumerate(classes)}), affine)
    labels = {"background": 0, **{c: i + 1 for i, c in enumerate(classes)}}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels,
                                                   "numTraining": len(cases), "file_ending": ".nii.gz"}))
    return root


def make_amos(root: Path, numbers=(1, 4, 9, 541)) -> Path:
    """AMOS layout (dataset.json with a ``training`` list; case numbers above 500 are MRI)."""
    entries = []
    for k, number in enumerate(numbers):
        name = f"amos_{number:04d}.nii.gz"
        image, label, affine = abdomen(2 * k, "lps" if k == 1 else "ras")
        save(root / "imagesTr" / name, image, affine)
        save(root / "labelsTr" / name, organ_label(label, AMOS_VALUES), affine)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "AMOS", "description": "MICCAI2022 Multi-Modality Abdominal Multi-Organ Segmentation Challenge",
        "modality": {"0": "CT"}, "labels": AMOS_LABELS, "numTraining": len(entries), "training": entries,
        "validation": [], "test": []}, indent=1))
    return root


TS_STRUCTURES = ("liver", "spleen", "kidney_left", "kidney_right", "aorta")


def make_totalsegmentator(root: Path, subjects=(("s0001", 0, "ras", "train"), ("s0002", 4, "lps", "train"),
                                                ("s0003", 6, "oblique", "test")),
                          structures=TS_STRUCTURES) -> Path:
    """TotalSegmentator layout: ``<subject>/ct.nii.gz``, ``segmentations/<structure>.nii.gz``, meta.csv."""
    rows = ["image_id;age;gender;institute;study_type;split"]
    for subject, offset, variant, split in subjects:
        image, label, affine = abdomen(offset, variant)
        save(root / subject / "ct.nii.gz", image, affine)
        for name in structures:
            save(root / subject / "segmentations" / f"{name}.nii.gz", (label == TS_IDS[name]).astype(np.uint8), affine)
        rows.append(f"{subject};60;m;A;ct abdomen;{split}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root


def make_aorta_subject(root: Path, subject: str = "s0100") -> Path:
    """A TotalSegmentator subject from C_aorta_crop_1p5mm (LPS on disk) with its real masks, at 4.5 mm."""
    folder = TS_EXAMPLES / "C_aorta_crop_1p5mm"
    ct = nib.load(str(folder / "ct.nii.gz"))
    step = np.diag([3.0, 3.0, 3.0, 1.0])
    affine = np.asarray(ct.affine) @ step
    save(root / subject / "ct.nii.gz", np.asanyarray(ct.dataobj)[::3, ::3, ::3].astype(np.int16), affine)
    for mask in sorted((folder / "masks").glob("*.nii.gz")):
        data = np.asanyarray(nib.load(str(mask)).dataobj)[::3, ::3, ::3].astype(np.uint8)
        save(root / subject / "segmentations" / mask.name, data, affine)
    return root / subject


def make_csv(root: Path, nnunet_root: Path, ids=True, duplicate: str | None = None) -> Path:
    """A CSV list over the images and labels of an nnU-Net folder, with relative paths."""
    lines = ["image,label" + (",id" if ids else "")]
    for image in sorted((nnunet_root / "imagesTr").glob("*_0000.nii.gz")):
        case_id = image.name[: -len("_0000.nii.gz")]
        label = nnunet_root / "labelsTr" / f"{case_id}.nii.gz"
        rel_image = Path("..") / nnunet_root.name / "imagesTr" / image.name
        rel_label = Path("..") / nnunet_root.name / "labelsTr" / label.name
        row = f"{rel_image},{rel_label}"
        if ids:
            row += f",{duplicate if duplicate and case_id.endswith(('1', '2')) else 'p_' + case_id}"
        lines.append(row)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cases.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------- corruption
def corrupt(root: Path, case_id: str, kind: str) -> None:
    """Break case ``case_id`` of an nnU-Net folder made by :func:`make_nnunet` in one way."""
    image_path = root / "imagesTr" / f"{case_id}_0000.nii.gz"
    label_path = root / "labelsTr" / f"{case_id}.nii.gz"
    image, label = nib.load(str(image_path)), nib.load(str(label_path))
    img, lab, affine = np.asanyarray(image.dataobj), np.asanyarray(label.dataobj), image.affine
    if kind == "truncated":
        data = image_path.read_bytes()
        image_path.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "unreadable":
        label_path.write_bytes(gzip.compress(b"this is not a NIfTI file" * 20))
    elif kind == "missing":
        image_path.unlink()
    elif kind == "shape":
        save(label_path, lab[:-2], affine)
    elif kind == "affine":
        shifted = affine.copy()
        shifted[:3, 3] += 7.5
        save(label_path, lab, shifted)
    elif kind == "values":
        bad = lab.copy()
        bad[bad == 1] = 9
        save(label_path, bad, affine)
    elif kind == "nan":
        bad = img.astype(np.float32)
        bad[3, 4, 5] = np.nan
        save(image_path, bad, affine)
    elif kind == "empty":
        save(label_path, np.zeros_like(lab), affine)
    elif kind == "spacing":
        tiny = affine.copy()
        tiny[:3, :3] *= 1e-3
        save(image_path, img, tiny)
        save(label_path, lab, tiny)
    else:
        raise ValueError(kind)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class Killed(Exception):
    """Raised by :func:`kill_after` to stop training as a kill would."""


def kill_after(epoch: int):
    """A training callback that simulates a kill right after epoch ``epoch`` was checkpointed."""
    from HyperSORTLib.training import Callback

    class _KillAfter(Callback):
        def on_epoch_end(self, trainer, stats):
            if trainer.epoch == epoch:
                raise Killed()

    return _KillAfter()


# --------------------------------------------------------------------------- latent tables
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CENTRES = np.array([[0.0, 0.0], [6.0, 0.0], [3.0, 5.0]])
SIZES = (60, 45, 30)
# Errors far from the clusters *and* from each other: each is alone in its region.
SCATTERED_ERRORS = np.array([[15.0, 15.0], [-12.0, 10.0], [10.0, -12.0], [-10.0, -10.0]])


def make_layout(seed: int = 0, spread: float = 0.4, errors: np.ndarray = SCATTERED_ERRORS,
                extra_dims: int = 0):
    """3 separated clusters (unequal sizes) + scattered errors appended at the end."""
    rng = np.random.default_rng(seed)
    clean = np.concatenate([rng.normal(c, spread, (n, 2)) for c, n in zip(CENTRES, SIZES)])
    latents = np.concatenate([clean, errors])
    if extra_dims:
        latents = np.column_stack([latents, rng.normal(0.0, spread, (len(latents), extra_dims))])
    groups = np.concatenate([np.repeat([0, 1, 2], SIZES), np.arange(len(errors)) % 3])
    is_error = np.concatenate([np.zeros(len(clean), bool), np.ones(len(errors), bool)])
    return latents, groups, is_error
