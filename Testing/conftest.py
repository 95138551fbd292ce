"""Shared fixtures: tiny NIfTI datasets written to temporary folders, tiny configurations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from HyperSORTLib.config import DataConfig, HyperNetConfig, ModelConfig, RunConfig, TrainConfig, UNetConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_sphere_dataset(root: Path, n_cases: int = 6, shape=(16, 16, 16), seed: int = 0,
                         spacing=(2.0, 2.0, 2.0)) -> Path:
    """nnU-Net-layout dataset of noisy images with two spheres (classes 1 and 2)."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    affine = np.diag([*spacing, 1.0])
    for i in range(n_cases):
        label = np.zeros(shape, np.uint8)
        for cls, centre_frac in ((1, 0.33), (2, 0.67)):
            centre = np.array(shape) * centre_frac + rng.normal(0, 1, 3)
            radius = rng.uniform(2.5, 4.0)
            label[np.linalg.norm(grid - centre, axis=-1) < radius] = cls
        image = (label * 100.0 + rng.normal(0, 20, shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "ball_a": 1, "ball_b": 2},
        "numTraining": n_cases, "file_ending": ".nii.gz"}))
    return root


@pytest.fixture
def sphere_dataset(tmp_path: Path) -> Path:
    return write_sphere_dataset(tmp_path / "spheres")


def tiny_config(**train) -> RunConfig:
    """A run configuration small enough to train in about a second on CPU."""
    train_cfg = dict(epochs=3, batch_size=2, device="cpu", latent_lr=1e-2, seed=0)
    train_cfg.update(train)
    return RunConfig(
        model=ModelConfig(UNetConfig(num_classes=3, channels=(4, 8), convs_per_level=1), HyperNetConfig(hidden=(8, 8))),
        data=DataConfig(class_names=("background", "ball_a", "ball_b"), spacing=None, patch_size=(16, 16, 16),
                        intensity="window", window=(-50.0, 250.0)),
        train=TrainConfig(**train_cfg),
    )


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Results compared bit for bit must not depend on the test runner's thread count.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ---------------------------------------------------------------------------- the Slicer module
MODULE_DIR = Path(__file__).resolve().parents[1] / "HyperSORT"
if str(MODULE_DIR) not in sys.path:  # the module's package (HyperSORTModule), as Slicer's module path has it
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A copy of the run the Slicer extension ships for its self-test (2-D latent space, six cases)."""
    from HyperSORTModule import SelfTest

    return SelfTest.packagedRun(tmp_path_factory.mktemp("packaged") / "run")


@pytest.fixture
def scene():
    """A real MRML scene (slicer-core) outside the application."""
    pytest.importorskip("slicer")
    from HyperSORTModule import StandaloneScene

    return StandaloneScene.newScene()


@pytest.fixture
def logic(scene, tiny_run):
    """The module's Qt-free logic on ``scene`` with the packaged run loaded."""
    from HyperSORTModule.CoreLogic import HyperSORTCoreLogic

    logic = HyperSORTCoreLogic(scene)
    logic.loadRun(tiny_run, device="cpu")
    return logic


@pytest.fixture
def audited_run(tmp_path, tiny_run) -> tuple[Path, Path]:
    """(run, dataset): a copy of the packaged run with an ``analysis/samples.csv`` ranking
    (``SelfTest.AUDIT_RANKS``, clusters 0 and 1), and the two-ball dataset it was trained on."""
    import shutil

    from HyperSORTModule import SelfTest

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    SelfTest.writeAuditTable(run)
    return run, SelfTest.writeSphereDataset(tmp_path / "dataset")
