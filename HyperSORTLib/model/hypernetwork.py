"""The weight generator: latent vector -> every parameter tensor of the target UNet.

A trunk MLP maps the latent to a feature vector; one linear head per UNet tensor maps the
features to that tensor's values, squashed by ``output_scale * tanh``. The heads are stored
as one fused linear layer whose output is split tensor by tensor: mathematically the same as
separate heads, but one matrix product instead of one per tensor (114 in the reference UNet).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from HyperSORTLib.config import HyperNetConfig


class WeightGenerator(nn.Module):
    """Generate the parameters of ``target`` from latent vectors.

    The output is a ``dict[str, Tensor]`` keyed by the target's own parameter names, each
    tensor with a leading batch dimension, ready for ``torch.func.functional_call``.

    Args:
        target: the network whose parameters are generated; only its parameter names, shapes
            and initial values are read, it is not kept.
        latent_dim: dimension of the latent vectors.
        hidden: widths of the trunk layers (ReLU after every layer).
        output_scale: outputs are ``output_scale * tanh(.)``, which bounds every weight.
        head_init_gain: see :func:`init_heads_from_target`.

    Example:
        >>> from HyperSORTLib.model.unet import UNet3D
        >>> unet = UNet3D(channels=(4, 8), convs_per_level=1)
        >>> gen = WeightGenerator(unet, latent_dim=2, hidden=(16,))
        >>> weights = gen(torch.zeros(3, 2))
        >>> weights["head.weight"].shape
        torch.Size([3, 2, 4, 3, 3, 3])
    """

    def __init__(
        self,
        target: nn.Module,
        latent_dim: int = 2,
        hidden: Sequence[int] = (50, 50, 50),
        output_scale: float = 5.0,
        head_init_gain: float = 0.1,
    ) -> None:
        super().__init__()
        self.config = HyperNetConfig(latent_dim=latent_dim, hidden=tuple(int(h) for h in hidden),
                                     output_scale=output_scale, head_init_gain=head_init_gain)
        params = list(target.named_parameters())
        if not params:
            raise ValueError("WeightGenerator: the target network has no parameters to generate.")
        self.names: tuple[str, ...] = tuple(name for name, _ in params)
        self.shapes: tuple[torch.Size, ...] = tuple(p.shape for _, p in params)
        self.sizes: tuple[int, ...] = tuple(p.numel() for _, p in params)

        layers: list[nn.Module] = []
        width = latent_dim
        for h in self.config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.Linear(width, sum(self.sizes))
        init_heads_from_target(self, [p.detach() for _, p in params])

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map latents ``z`` of shape [B, latent_dim] to the target's parameters ([B, ...] each)."""
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"WeightGenerator expects latents of shape [B, {self.config.latent_dim}], "
                             f"found {tuple(z.shape)}.")
        flat = self.config.output_scale * torch.tanh(self.heads(self.trunk(z)))
        chunks = torch.split(flat, self.sizes, dim=1)
        return {name: chunk.reshape(z.shape[0], *shape)
                for name, chunk, shape in zip(self.names, chunks, self.shapes)}


@torch.no_grad()
def init_heads_from_target(generator: WeightGenerator, initial: Sequence[torch.Tensor]) -> None:
    """Start every latent near the target network's own default initialisation.

    Why: the UNet's default initialisation is what makes it trainable (activations neither
    vanish nor explode through 20+ layers). The head biases are set to
    ``atanh(w0 / output_scale)`` so that a head whose weights were zero would output exactly
    the initial tensor ``w0`` through the ``output_scale * tanh`` squashing. The head weights
    are drawn small, with a spread proportional to each tensor's own initial spread
    (``head_init_gain`` times it, divided by the square root of the trunk width), so that the
    latent still changes every tensor from the first step but does not drown the
    initialisation: tensors of different scale (a conv kernel, an instance-norm gain) get
    proportionate variation. Tensors initialised to a constant (norm gains and shifts) use the
    fan-in scale of the trunk instead.
    """
    scale = generator.config.output_scale
    fan_in = generator.heads.in_features
    gain = generator.config.head_init_gain
    start = 0
    for tensor, size in zip(initial, generator.sizes):
        values = tensor.reshape(-1).to(generator.heads.bias.dtype)
        ratio = (values / scale).clamp(-0.999, 0.999)
        generator.heads.bias[start:start + size] = torch.atanh(ratio)
        spread = float(values.std()) if values.numel() > 1 else 0.0
        if spread == 0.0:
            spread = 1.0 / math.sqrt(fan_in)
        bound = gain * spread * math.sqrt(3.0 / fan_in)  # uniform with std gain*spread/sqrt(fan_in)
        generator.heads.weight[start:start + size].uniform_(-bound, bound)
        start += size
