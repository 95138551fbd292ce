"""One UNet for every case: the model of the robust-training baselines, in HyperSORT's interface.

A baseline run trains the same :class:`~HyperSORTLib.model.unet.UNet3D` that the hyper-network
generates, but learns its weights directly. :class:`PlainUNetModel` exposes the members of
:class:`~HyperSORTLib.model.hypersort.HyperSORTModel` that loading, decoding and segmenting use
(``case_ids``, ``latents``, ``forward_latents``, ``learned_state``, ``decode``), so a baseline
run is read, decoded and segmented by the same code as a HyperSORT run: every latent point
decodes to the one learned UNet, and the latent table is all zeros.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from HyperSORTLib.config import ModelConfig
from HyperSORTLib.model.latent import LatentTable
from HyperSORTLib.model.unet import UNet3D

#: How a baseline's probabilities become labels: the arg-max, or per image and class the
#: soft-Dice threshold t* of :func:`HyperSORTLib.perturbation.marginal.marginal_threshold`.
DECISIONS = ("argmax", "marginal-threshold")


class PlainUNetModel(nn.Module):
    """A single learned UNet with a constant (zero) latent table.

    Args:
        config: the UNet architecture (``config.hyper.latent_dim`` sizes the constant table).
        case_ids: the training cases.
        seed: seeds the UNet's initialisation exactly as :class:`HyperSORTModel` seeds its
            template, so a baseline starts from the weights the hyper-network's heads start from.
        decision: one of :data:`DECISIONS`.

    Example:
        >>> from HyperSORTLib.config import ModelConfig, UNetConfig
        >>> model = PlainUNetModel(ModelConfig(UNetConfig(num_classes=2, channels=(4, 8), convs_per_level=1)), ["a"])
        >>> model.decode([0.3, -1.0])(torch.zeros(1, 1, 8, 8, 8)).shape
        torch.Size([1, 2, 8, 8, 8])
    """

    def __init__(self, config: ModelConfig, case_ids: Sequence[str], seed: int = 0,
                 decision: str = "argmax") -> None:
        super().__init__()
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, found {decision!r}.")
        self.config = config
        self.decision = decision
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.unet = UNet3D.from_config(config.unet)
        # its own generator, so building the table leaves the global random stream alone
        self.latents = LatentTable(case_ids, config.hyper.latent_dim, init_std=0.0,
                                   generator=torch.Generator().manual_seed(0))
        self.latents.weight.requires_grad_(False)

    @property
    def case_ids(self) -> tuple[str, ...]:
        return self.latents.case_ids

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x)

    def forward_latents(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the one UNet (``z`` is ignored: every latent point is the same network)."""
        return self.unet(x)

    def learned_state(self) -> dict[str, torch.Tensor]:
        return {f"unet.{k}": v.detach() for k, v in self.unet.state_dict().items()}

    def load_learned_state(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Inverse of :meth:`learned_state`; a shape or key mismatch names ``source``."""
        expected = self.learned_state()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{source} does not match this UNet: missing {missing[:5]}, unexpected {unexpected[:5]}.")
        for key, value in state.items():
            if value.shape != expected[key].shape:
                raise ValueError(f"{source}: tensor '{key}' has shape {tuple(value.shape)}, this UNet expects "
                                 f"{tuple(expected[key].shape)}.")
        self.unet.load_state_dict({k[len("unet."):]: v for k, v in state.items()})

    @torch.no_grad()
    def decode(self, z: torch.Tensor | Sequence[float] | None = None) -> UNet3D:
        """A copy of the learned UNet in eval mode, whatever the latent point."""
        return copy.deepcopy(self.unet).eval()
