"""The weight generator: latent vector -> every parameter tensor of the target UNet.

A trunk MLP maps the latent to a feature vector; one linear head per UNet tensor maps the
features to that tensor's values, squashed by ``output_scale * tanh``. The heads are stored
as one fused linear layer whose output is split tensor by tensor: mathematically the same as
separate heads, but one matrix product instead of one per tensor (114 in the reference UNet).

The heads hold nearly all parameters: ``hidden[-1] + 1`` per generated value (170 M for the
reference UNet's 3.3 M values). Low-rank heads (``heads: low_rank``) first project the trunk's
features onto ``head_rank`` features shared by every head, which leaves ``head_rank + 1``
parameters per value (17 M with rank 4). The generated weights (before the ``tanh``) then lie
in a ``head_rank``-dimensional affine subspace around the UNet's initialisation, ample for a
latent of a few dimensions.
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
        heads: ``"full"`` or ``"low_rank"`` (see the module docstring).
        head_rank: bottleneck width of low-rank heads.

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
        heads: str = "full",
        head_rank: int = 4,
    ) -> None:
        super().__init__()
        self.config = HyperNetConfig(latent_dim=latent_dim, hidden=tuple(int(h) for h in hidden),
                                     output_scale=output_scale, head_init_gain=head_init_gain,
                                     heads=heads, head_rank=head_rank)
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
        if self.config.heads == "low_rank":
            # Linear, no bias, no activation: the heads stay a linear map of the trunk's features,
            # of rank head_rank.
            layers.append(nn.Linear(width, self.config.head_rank, bias=False))
            width = self.config.head_rank
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.Linear(width, sum(self.sizes))
        init_heads_from_target(self, [p.detach() for _, p in params])

    @classmethod
    def from_config(cls, target: nn.Module, config: HyperNetConfig) -> "WeightGenerator":
        """The generator ``config`` describes, for ``target``."""
        return cls(target, config.latent_dim, config.hidden, config.output_scale, config.head_init_gain,
                   config.heads, config.head_rank)

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

    Low-rank heads get the same variance per generated value and the same speed of learning.
    Variance: the bottleneck ``U`` is drawn like a default ``nn.Linear`` times ``a`` and the heads
    ``V`` uniform in ``+-gain * sqrt(3 / head_rank) / a``, so that ``V U`` has the full heads'
    variance ``gain**2 / (3 * hidden[-1])``. Speed: an Adam step moves every head weight by about
    the learning rate, so it moves a generated value by about ``lr * sum(|features|)``; the full
    heads read the ``hidden[-1]`` trunk features, the low-rank heads the ``head_rank`` bottleneck
    features. With ``a = sqrt(3) * hidden[-1] / head_rank`` the two sums agree at initialisation
    (measured on the demo's generator: 21.6 times for ``a = 1``; the rule gives 21.7), and the
    generator learns to use the latent as fast as with full heads. With ``a = 1`` it learns that
    many times slower, and within the demo's budget the map stays compressed (spleen-omitting
    cases inside the clean cloud).
    """
    scale = generator.config.output_scale
    if generator.config.heads == "low_rank":
        bottleneck = generator.trunk[-1]
        fan_in, rank = bottleneck.in_features, generator.config.head_rank
        a = math.sqrt(3) * fan_in / rank
        bottleneck.weight.uniform_(-a / math.sqrt(fan_in), a / math.sqrt(fan_in))
        bound = generator.config.head_init_gain * math.sqrt(3 / rank) / a
    else:
        bound = generator.config.head_init_gain / math.sqrt(generator.heads.in_features)
    generator.heads.weight.uniform_(-bound, bound)
    start = 0
    for tensor, size in zip(initial, generator.sizes):
        ratio = (tensor.reshape(-1).to(generator.heads.bias.dtype) / scale).clamp(-0.999, 0.999)
        generator.heads.bias[start:start + size] = torch.atanh(ratio)
        start += size
