"""Decoding: load a trained run and turn any latent point into a UNet that segments.

Example:
    >>> run = TrainedRun.load("runs/demo")  # doctest: +SKIP
    >>> unet = run.decode(run.latent_of("case_003"))  # an ordinary nn.Module  # doctest: +SKIP
    >>> labels = run.segment(volume, run.latent_of("case_003"))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from HyperSORTLib.config import RunConfig
from HyperSORTLib.model.hypersort import HyperSORTModel
from HyperSORTLib.model.unet import UNet3D
from HyperSORTLib.training import checkpoint as ckpt
from HyperSORTLib.training.trainer import resolve_device


@dataclass
class TrainedRun:
    """A trained model with its configuration, case ids and class names."""

    run_dir: Path
    config: RunConfig
    model: HyperSORTModel
    device: torch.device

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> "TrainedRun":
        """Load ``run_dir`` (config.json + model.safetensors); errors name the file at fault."""
        run_dir = Path(run_dir)
        config, case_ids, _ = ckpt.read_run_config(run_dir)
        dev = resolve_device(device)
        model = HyperSORTModel(config.model, case_ids, seed=config.train.seed)
        model.load_learned_state(ckpt.load_model_weights(run_dir), source=str(run_dir / ckpt.MODEL_FILE))
        return cls(run_dir, config, model.to(dev).eval(), dev)

    @property
    def case_ids(self) -> tuple[str, ...]:
        return self.model.case_ids

    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.config.data.class_names
        return names or tuple(f"class_{i}" for i in range(self.config.model.unet.num_classes))

    @property
    def latents(self) -> np.ndarray:
        """The latent table [N, D] as a numpy array (row i is ``case_ids[i]``)."""
        return self.model.latents.weight.detach().cpu().numpy().copy()

    def latent_of(self, case_id: str) -> np.ndarray:
        """The learned latent of a training case."""
        return self.latents[int(self.model.latents.rows([case_id])[0])]

    def decode(self, z: Sequence[float] | np.ndarray | torch.Tensor) -> UNet3D:
        """An ordinary UNet (eval mode) whose weights the hyper-network generates from ``z``."""
        return self.model.decode(torch.as_tensor(np.asarray(z, dtype=np.float32)))

    @torch.no_grad()
    def predict_logits(self, image: torch.Tensor, z: Sequence[float] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Logits [B, K, X, Y, Z] of the UNet decoded from ``z`` on a preprocessed batch [B, C, X, Y, Z].

        Spatial sizes that are not multiples of the UNet's divisor go through MONAI's sliding
        window inference with the training patch size.
        """
        unet = self.decode(z)
        image = image.to(self.device, torch.float32)
        divisor = self.config.model.unet.divisor
        if all(s % divisor == 0 for s in image.shape[2:]) and image[0, 0].numel() <= np.prod(
                self.config.data.patch_size):
            return unet(image)
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(image, roi_size=self.config.data.patch_size, sw_batch_size=1,
                                        predictor=unet, overlap=0.25, mode="gaussian")

    def segment(self, volume: np.ndarray | torch.Tensor, z: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
        """Label map (uint8, same shape) of a preprocessed 3-D volume, segmented as ``z`` annotates."""
        array = torch.as_tensor(np.asarray(volume, dtype=np.float32))
        if array.dim() != 3:
            raise ValueError(f"segment expects a preprocessed 3-D volume [X, Y, Z], found shape {tuple(array.shape)}.")
        logits = self.predict_logits(array[None, None], z)
        return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
