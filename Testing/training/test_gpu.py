"""CUDA paths: mixed-precision training and agreement with the CPU. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from HyperSORTLib.data import SegmentationCases, read_nnunet_folder, training_transforms
from HyperSORTLib.model import HyperSORTModel, batched_forward, looped_forward
from HyperSORTLib.training import Trainer

pytestmark = pytest.mark.gpu


def test_cuda_training_with_bfloat16_autocast(sphere_dataset, tmp_path):
    config = tiny_config(epochs=8, device="cuda", amp=True)
    cases = read_nnunet_folder(sphere_dataset)
    trainer = Trainer(config, SegmentationCases(cases, training_transforms(config.data)), cases.case_ids,
                      tmp_path / "run", progress=False)
    assert trainer.device.type == "cuda"
    # The rule: bfloat16 autocast where the GPU supports it, full precision where it does not.
    assert trainer.amp_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    result = trainer.fit()
    losses = [h["loss"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_cuda_batched_forward_matches_loop():
    config = tiny_config().model
    model = HyperSORTModel(config, ["a", "b", "c"], latent_init_std=0.5).cuda()
    x = torch.randn(3, 1, 16, 16, 16, device="cuda")
    weights = model.generator(model.latents.weight)
    looped = looped_forward(model.unet, weights, x)
    scale = float(looped.abs().max())
    # cuDNN may use TF32 for convolutions, so compare at TF32 precision
    torch.testing.assert_close(batched_forward(model.unet, weights, x), looped, rtol=2e-2, atol=2e-2 * scale)
