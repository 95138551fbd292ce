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
        head_init_gain: float = 1.0,
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
    """Centre every head on the target network's initialisation and make it depend on the latent.

    Why the biases: a head's output is ``output_scale * tanh(W h + b)``. Setting ``b`` to
    ``atanh(w0 / output_scale)`` makes a head whose trunk features vanish output exactly the
    UNet's default initial tensor ``w0``, the initialisation that keeps activations well scaled
    through 20+ layers.

    Why the weights: they are drawn like a default ``nn.Linear`` (uniform in
    ``+-1/sqrt(fan_in)``, as in the reference release) times ``head_init_gain``. Every weight
    then depends on the latent from the first step, strongly enough that the segmentation
    gradient reaching each latent can compete with the L1 pull towards the origin; with much
    smaller head weights (gain << 1) the latents collapse onto the origin before the generator
    learns to use them. Instance normalisation after every convolution keeps the resulting
    larger weights harmless.
    """
    scale = generator.config.output_scale
    bound = generator.config.head_init_gain / math.sqrt(generator.heads.in_features)
    generator.heads.weight.uniform_(-bound, bound)
    start = 0
    for tensor, size in zip(initial, generator.sizes):
        ratio = (tensor.reshape(-1).to(generator.heads.bias.dtype) / scale).clamp(-0.999, 0.999)
        generator.heads.bias[start:start + size] = torch.atanh(ratio)
        start += size
