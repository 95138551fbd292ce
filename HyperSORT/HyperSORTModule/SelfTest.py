"""Synthetic data and a tiny trained run for the module's self-test (and the Logic's pytest suite).

Everything here is deterministic and small. The extension ships one tiny run
(``Resources/SelfTest/TinyRun``: what :func:`trainTinyRun` writes with ``epochs=3``, without the
resumable checkpoint), so the self-test needs no training; ``python -m HyperSORTModule.SelfTest``
writes it again when the run format changes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

CLASS_NAMES = ("background", "ball_a", "ball_b")
#: The packaged tiny run and the files of it that are shipped.
PACKAGED_RUN = Path(__file__).resolve().parents[1] / "Resources" / "SelfTest" / "TinyRun"
PACKAGED_FILES = ("config.json", "model.safetensors", "latents.csv", "train_log.csv")


def packagedRun(destination: Path) -> Path:
    """A copy of the packaged tiny run in ``destination`` (analyses and reviews are written into runs)."""
    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(PACKAGED_RUN, destination)
    return destination


#: A suspicion ranking for the packaged run's cases: case_004 most suspicious, case_000 least.
AUDIT_RANKS = {"case_004": 1, "case_002": 2, "case_005": 3, "case_001": 4, "case_003": 5, "case_000": 6}


def writeAuditTable(runDirectory: Path, ranks=None) -> Path:
    """An ``analysis/samples.csv`` as ``hypersort analyze`` writes it (the columns the review reads):
    ``ranks`` (default :data:`AUDIT_RANKS`), clusters 1 for the two most suspicious, 0 otherwise."""
    import csv

    ranks = dict(ranks or AUDIT_RANKS)
    folder = Path(runDirectory) / "analysis"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "samples.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "z1", "z2", "cluster", "suspicion", "rank"])
        for caseId, rank in ranks.items():
            writer.writerow([caseId, 0.0, 0.0, int(rank <= 2), 1.0 - rank / 10, rank])
    return folder / "samples.csv"


def writePackagedRun(destination: Path = PACKAGED_RUN, workFolder: Path | None = None) -> Path:
    """Train the tiny run again and keep its shipped files in ``destination``."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=workFolder) as work:
        run = trainTinyRun(Path(work), epochs=3)
        destination.mkdir(parents=True, exist_ok=True)
        for name in PACKAGED_FILES:
            shutil.copy2(run / name, destination / name)
    return destination


def sphereLabels(shape, seed: int = 0, centres=(0.33, 0.67), radii=None) -> np.ndarray:
    """Two balls (classes 1 and 2) along the volume diagonal, jittered by ``seed``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    label = np.zeros(shape, np.uint8)
    for cls, fraction in enumerate(centres, start=1):
        centre = np.array(shape) * fraction + rng.normal(0, 1, 3)
        radius = radii[cls - 1] if radii else rng.uniform(2.5, 4.0)
        label[np.linalg.norm(grid - centre, axis=-1) < radius] = cls
    return label


def sphereImage(label: np.ndarray, seed: int = 0) -> np.ndarray:
    """CT-like intensities for ``label``: 100 HU per class step plus noise."""
    rng = np.random.default_rng(seed + 1000)
    return (label * 100.0 + rng.normal(0, 20, label.shape)).astype(np.float32)


def writeSphereDataset(root: Path, nCases: int = 6, shape=(16, 16, 16), seed: int = 0,
                       spacing=(2.0, 2.0, 2.0)) -> Path:
    """An nnU-Net-layout dataset (imagesTr, labelsTr, dataset.json) of two-ball images."""
    import nibabel as nib

    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    for index in range(nCases):
        label = sphereLabels(shape, seed=seed * 1000 + index)
        nib.save(nib.Nifti1Image(sphereImage(label, seed * 1000 + index), affine),
                 str(root / "imagesTr" / f"case_{index:03d}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"case_{index:03d}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {name: i for i, name in enumerate(CLASS_NAMES)},
        "numTraining": nCases, "file_ending": ".nii.gz"}))
    return root


def tinyRunConfig(epochs: int = 4, seed: int = 0, latentDim: int = 2):
    """A configuration that trains in about a second on a CPU."""
    from HyperSORTLib.config import DataConfig, HyperNetConfig, ModelConfig, RunConfig, TrainConfig, UNetConfig

    return RunConfig(
        model=ModelConfig(UNetConfig(num_classes=len(CLASS_NAMES), channels=(4, 8), convs_per_level=1),
                          HyperNetConfig(latent_dim=latentDim, hidden=(8, 8))),
        data=DataConfig(class_names=CLASS_NAMES, spacing=None, patch_size=(16, 16, 16), intensity="window",
                        window=(-50.0, 250.0)),
        train=TrainConfig(epochs=epochs, batch_size=2, device="cpu", latent_lr=1e-2, seed=seed),
    )


def trainTinyRun(root: Path, epochs: int = 4, seed: int = 0, latentDim: int = 2) -> Path:
    """Train a tiny run on a fresh two-ball dataset under ``root``; returns the run directory."""
    from HyperSORTLib.data import SegmentationCases, read_nnunet_folder, training_transforms
    from HyperSORTLib.training import Trainer

    root = Path(root)
    data = writeSphereDataset(root / "data", seed=seed)
    config = tinyRunConfig(epochs=epochs, seed=seed, latentDim=latentDim)
    cases = read_nnunet_folder(data)
    dataset = SegmentationCases(cases, training_transforms(config.data))
    Trainer(config, dataset, cases.case_ids, root / "run", progress=False).fit()
    return root / "run"


def syntheticCT(shape=(40, 36, 24), spacing=(2.0, 2.0, 2.0), oblique: bool = False, seed: int = 7):
    """A two-ball scan [I, J, K] and its IJK-to-RAS matrix (LPS-like axis flips; rotated if ``oblique``)."""
    label = sphereLabels(shape, seed=seed, radii=(5.0, 4.0))
    image = sphereImage(label, seed)
    directions = np.diag([-1.0, -1.0, 1.0])
    if oblique:
        angle = np.deg2rad(20.0)
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1.0]])
        tilt = np.array([[1.0, 0, 0], [0, np.cos(angle / 2), -np.sin(angle / 2)], [0, np.sin(angle / 2), np.cos(angle / 2)]])
        directions = rotation @ tilt @ directions
    affine = np.eye(4)
    affine[:3, :3] = directions * np.asarray(spacing, dtype=float)
    affine[:3, 3] = [30.0, -12.5, 7.25]
    return image, affine, label


def addVolumeNode(scene, array: np.ndarray, affine: np.ndarray, name: str = "CT"):
    """A scalar volume node holding an [I, J, K] array with its IJK-to-RAS matrix."""
    from HyperSORTModule.VolumeNodes import updateVolumeFromIJK

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    updateVolumeFromIJK(node, array, affine)
    node.CreateDefaultDisplayNodes()
    return node


if __name__ == "__main__":
    print(writePackagedRun())
