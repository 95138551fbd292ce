"""Decoding: load a trained run and turn any latent point into a UNet that segments.

Example:
    >>> run = TrainedRun.load("runs/demo")  # doctest: +SKIP
    >>> unet = run.decode(run.latent_of("case_003"))  # an ordinary nn.Module  # doctest: +SKIP
    >>> labels = run.segment(volume, run.latent_of("case_003"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from HyperSORTLib.config import RunConfig
from HyperSORTLib.data.labels import argmax_labels
from HyperSORTLib.model.hypersort import HyperSORTModel
from HyperSORTLib.model.plain import PlainUNetModel
from HyperSORTLib.model.unet import UNet3D
from HyperSORTLib import rundir
from HyperSORTLib.device import autocast_dtype, resolve_device


@dataclass
class TrainedRun:
    """A trained model with its configuration, case ids and class names.

    The model is a :class:`HyperSORTModel`, or for a robust-training baseline run a
    :class:`PlainUNetModel` (every latent point decodes to its one UNet; a ``ce-threshold`` run
    turns its probabilities into labels with the per-image threshold t*, see
    :func:`marginal_threshold_logits`)."""

    run_dir: Path
    config: RunConfig
    model: HyperSORTModel | PlainUNetModel
    device: torch.device
    #: sha256 of the ``model.safetensors`` bytes the weights were loaded from.
    weights_sha256: str = ""

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> "TrainedRun":
        """Load ``run_dir`` (config.json + model.safetensors); errors name the file at fault."""
        run_dir = Path(run_dir)
        config, case_ids, doc = rundir.read_run_config(run_dir)
        dev = resolve_device(device)
        method = rundir.run_method(doc)
        if method["name"] == rundir.METHOD_HYPERSORT:
            model: HyperSORTModel | PlainUNetModel = HyperSORTModel(config.model, case_ids, seed=config.train.seed)
        else:  # a robust-training baseline: one UNet, whatever the latent point
            model = PlainUNetModel(config.model, case_ids, seed=config.train.seed,
                                   decision=method.get("decision", "argmax"))
        state, digest = rundir.read_model_weights(run_dir)
        model.load_learned_state(state, source=str(run_dir / rundir.MODEL_FILE))
        return cls(run_dir, config, model.to(dev).eval(), dev, digest)

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
        z = np.asarray(z, dtype=np.float32).reshape(-1) if not isinstance(z, torch.Tensor) else z
        if len(z) != self.latent_dim:
            raise ValueError(f"This run's latent space has {self.latent_dim} dimensions; the latent point given "
                             f"has {len(z)} coordinates.")
        with torch.no_grad():
            return self.model.decode(torch.as_tensor(z, dtype=torch.float32))

    @property
    def latent_dim(self) -> int:
        return self.config.model.hyper.latent_dim

    @torch.inference_mode()
    def predict_logits(self, image: torch.Tensor, z: Sequence[float] | np.ndarray | torch.Tensor | UNet3D,
                       overlap: float = 0.25, progress: Callable[[float], None] | None = None,
                       cancel: Callable[[], bool] | None = None, sw_batch_size: int = 1,
                       channels_last: bool = False, mixed_precision: bool = False,
                       single_pass_voxels: int = 0) -> torch.Tensor:
        """Logits [B, K, X, Y, Z] on a preprocessed batch [B, C, X, Y, Z], segmented as ``z`` annotates.

        A volume that fits in the training patch runs in one pass, as it is (the UNet takes any
        size, :func:`~HyperSORTLib.model.unet.match_skip`); a larger one goes through MONAI's
        sliding-window inference with the training patch size (Gaussian-weighted overlap). A run
        whose decision is the marginal threshold returns :func:`marginal_threshold_logits` of the
        whole image's logits.

        Args:
            z: a latent point, or a UNet already decoded from one.
            progress: called with the finished fraction in [0, 1] after every window.
            cancel: polled before every window batch; returning True raises :class:`InterruptedError`.
            sw_batch_size: sliding windows run through the UNet together (the same logits; fewer,
                larger calls, which a GPU runs faster).
            channels_last: run the UNet in the ``channels_last_3d`` memory layout (the same labels up
                to float rounding; about twice as fast on CPU with oneDNN).
            mixed_precision: run the UNet under autocast in the 16-bit type of
                :func:`~HyperSORTLib.device.autocast_dtype` (CUDA: bfloat16 where supported, else
                float16; CPU: bfloat16 on processors that compute it natively, else ignored). The
                logits are float32; labels differ from float32 ones at a few boundary voxels.
            single_pass_voxels: a volume larger than the patch but of at most this many voxels
                also runs in one pass. The UNet is fully convolutional, but its instance
                normalisation then sees the whole volume instead of one window, so the labels
                differ slightly from the windowed ones; in exchange no voxel is computed
                twice (a 186x146x200 body box at 2 mm: one pass of 5.8 M voxels instead of four
                168^3 windows of 4.7 M each). 0 (the default): windows as in training.
        """
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, found {sw_batch_size}.")
        unet = z if isinstance(z, UNet3D) else self.decode(z)
        if channels_last:
            unet = unet.to(memory_format=torch.channels_last_3d)
        run_unet = _unet_caller(unet, channels_last, autocast_dtype(self.device) if mixed_precision else None)
        image = image.to(self.device, torch.float32)
        patch = tuple(self.config.data.patch_size)
        spatial = tuple(image.shape[2:])
        if all(s <= p for s, p in zip(spatial, patch)) or 0 < int(np.prod(spatial)) <= single_pass_voxels:
            if cancel is not None and cancel():
                raise InterruptedError("Segmentation cancelled.")
            logits = run_unet(image)
            if progress is not None:
                progress(1.0)
            return self._decide(logits)
        from monai.inferers import sliding_window_inference

        total = _window_count(spatial, patch, overlap) * image.shape[0]
        done = 0

        def predictor(window: torch.Tensor) -> torch.Tensor:
            nonlocal done
            if cancel is not None and cancel():
                raise InterruptedError("Segmentation cancelled.")
            out = run_unet(window)
            done += window.shape[0]
            if progress is not None:
                progress(min(1.0, done / total))
            return out

        return self._decide(sliding_window_inference(image, roi_size=patch, sw_batch_size=sw_batch_size,
                                                     predictor=predictor, overlap=overlap, mode="gaussian"))

    def _decide(self, logits: torch.Tensor) -> torch.Tensor:
        if getattr(self.model, "decision", "argmax") == "marginal-threshold":
            return marginal_threshold_logits(logits)
        return logits

    def segment(self, volume: np.ndarray | torch.Tensor, z: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
        """Label map (same shape, :func:`~HyperSORTLib.data.labels.label_dtype`) of a preprocessed 3-D
        volume, segmented as ``z`` annotates."""
        array = torch.as_tensor(np.asarray(volume, dtype=np.float32))
        if array.dim() != 3:
            raise ValueError(f"segment expects a preprocessed 3-D volume [X, Y, Z], found shape {tuple(array.shape)}.")
        logits = self.predict_logits(array[None, None], z)
        return argmax_labels(logits[0])


def _unet_caller(unet: torch.nn.Module, channels_last: bool,
                 dtype: torch.dtype | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``unet`` as a function of an input batch, in the memory layout asked for and under autocast
    to ``dtype`` (``None``: float32); returns contiguous float32 logits."""
    if not (channels_last or dtype):
        return unet

    def call(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if dtype is not None:
            with torch.autocast(x.device.type, dtype=dtype):
                out = unet(x)
        else:
            out = unet(x)
        return out.float().contiguous()

    return call


def _window_count(spatial: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding-window inference visits (for progress reporting)."""
    count = 1
    for size, r in zip(spatial, roi):
        if size <= r:
            continue
        interval = max(int(r * (1 - overlap)), 1)
        count *= int(np.ceil((size - r) / interval)) + 1
    return count


def marginal_threshold_logits(logits: torch.Tensor) -> torch.Tensor:
    """Scores [B, K, ...] whose arg-max thresholds each image's class probabilities at its t*.

    For every image ``b`` and foreground class ``k`` the softmax probabilities ``p_k`` get the
    soft-Dice threshold ``t*_bk`` of :func:`~HyperSORTLib.perturbation.marginal.marginal_threshold`
    (one class against the rest); the scores are ``log(p_k / t*_bk)`` for the foreground classes and
    0 for the background, so a voxel takes the foreground class that exceeds its threshold by the
    largest factor, and the background where none reaches its threshold. With two classes the
    arg-max is exactly ``p_1 >= t*``.
    """
    from HyperSORTLib.perturbation.marginal import marginal_threshold

    probs = torch.softmax(logits.float(), dim=1)
    scores = torch.zeros_like(probs)
    tiny = torch.finfo(probs.dtype).tiny
    for b in range(probs.shape[0]):
        for k in range(1, probs.shape[1]):
            t = marginal_threshold(probs[b, k].detach().cpu().double().numpy())
            # ">= t" wins over the background's 0 even where p == t
            scores[b, k] = torch.log(probs[b, k].clamp_min(tiny)) - math.log(t) + 1e-6
    return scores
