"""The three named parts put together: latent table -> weight generator -> target UNet."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from HyperSORTLib.config import ModelConfig
from HyperSORTLib.model.functional import forward_function
from HyperSORTLib.model.hypernetwork import WeightGenerator
from HyperSORTLib.model.latent import LatentTable
from HyperSORTLib.model.unet import UNet3D


class HyperSORTModel(nn.Module):
    """Hyper-network, latent table and the UNet template they drive.

    Only ``generator`` and ``latents`` are learned. ``unet`` is the architecture the generated
    weights are plugged into; its own parameters are frozen and never used in a forward pass.
    ``forward_strategy`` says how the batch's UNets run: ``"batched"`` (one ``vmap``/grouped
    convolution pass, the default) or ``"loop"`` (one sample at a time); the trainer sets it from
    ``train.forward`` (see :func:`~HyperSORTLib.model.functional.choose_forward`).

    Args:
        config: architecture of the UNet and the weight generator.
        case_ids: training sample ids, one latent each.
        latent_init_std: spread of the initial latents.
        seed: seeds the UNet template's initialisation (which the generator starts from), the
            generator's own initialisation and the latents.

    Example:
        >>> from HyperSORTLib.config import ModelConfig, UNetConfig, HyperNetConfig
        >>> cfg = ModelConfig(UNetConfig(num_classes=3, channels=(4, 8), convs_per_level=1),
        ...                   HyperNetConfig(hidden=(8,)))
        >>> model = HyperSORTModel(cfg, ["a", "b"])
        >>> model(torch.zeros(2, 1, 8, 8, 8), model.latents.rows(["a", "b"])).shape
        torch.Size([2, 3, 8, 8, 8])
    """

    def __init__(self, config: ModelConfig, case_ids: Sequence[str], latent_init_std: float = 0.05,
                 seed: int = 0) -> None:
        super().__init__()
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.unet = UNet3D.from_config(config.unet)
            self.unet.requires_grad_(False)
            hyper = config.hyper
            self.generator = WeightGenerator.from_config(self.unet, hyper)
        latent_rng = torch.Generator().manual_seed(seed + 1)
        self.latents = LatentTable(case_ids, hyper.latent_dim, latent_init_std, generator=latent_rng)
        self.forward_strategy = "batched"

    @property
    def case_ids(self) -> tuple[str, ...]:
        return self.latents.case_ids

    def forward(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Segment ``x[b]`` with the UNet of latent row ``rows[b]``; returns logits."""
        return self.forward_latents(x, self.latents(rows))

    def forward_latents(self, x: torch.Tensor, z: torch.Tensor, generator: nn.Module | None = None) -> torch.Tensor:
        """Segment ``x[b]`` with the UNet generated from latent ``z[b]``; returns logits.

        ``generator`` replaces ``self.generator`` for this call (a distributed run passes its
        ``DistributedDataParallel`` wrapper of it).
        """
        weights = (self.generator if generator is None else generator)(z)
        return forward_function(self.forward_strategy)(self.unet, weights, x)

    def learned_state(self) -> dict[str, torch.Tensor]:
        """Every learned tensor (generator and latents), keyed for saving."""
        state = {f"generator.{k}": v for k, v in self.generator.state_dict().items()}
        state["latents.weight"] = self.latents.weight.detach()
        return state

    def load_learned_state(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Inverse of :meth:`learned_state`; a shape or key mismatch names ``source``."""
        expected = self.learned_state()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{source} does not match this model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}.")
        for key, value in state.items():
            if value.shape != expected[key].shape:
                raise ValueError(f"{source}: tensor '{key}' has shape {tuple(value.shape)}, "
                                 f"this model expects {tuple(expected[key].shape)}.")
        with torch.no_grad():
            self.generator.load_state_dict({k[len("generator."):]: v for k, v in state.items()
                                            if k.startswith("generator.")})
            self.latents.weight.copy_(state["latents.weight"])

    @torch.no_grad()
    def decode(self, z: torch.Tensor | Sequence[float]) -> UNet3D:
        """Turn one latent point into an ordinary UNet (eval mode, on the model's device).

        Args:
            z: a latent vector of length ``latent_dim`` (any point of the map, not only a
                training sample's).
        """
        z = torch.as_tensor(z, dtype=self.latents.weight.dtype, device=self.latents.weight.device)
        if z.shape != (self.config.hyper.latent_dim,):
            raise ValueError(f"A latent point has {self.config.hyper.latent_dim} coordinates, "
                             f"found shape {tuple(z.shape)}.")
        weights = self.generator(z.unsqueeze(0))
        # built without memory and initialisation (the generated tensors become its parameters):
        # a moving probe decodes a new UNet at every step
        with torch.device("meta"):
            unet = UNet3D.from_config(self.config.unet)
        unet.load_state_dict({k: v[0].contiguous() for k, v in weights.items()}, assign=True)
        return unet.requires_grad_(False).eval()
