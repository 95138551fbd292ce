"""Running one network with different weights per sample.

Each sample of a batch has its own generated UNet. :func:`batched_forward` runs all of them in
one pass: ``torch.func.vmap`` over ``functional_call`` lowers every convolution with
per-sample kernels to a single grouped convolution (kernels stacked to
[B*C_out, C_in, k, k, k], ``groups=B``) and the per-sample instance-norm affine to a
broadcast. :func:`looped_forward` is the plain per-sample loop (the reference release's way),
the oracle the batched path is tested against, and the faster of the two for wide UNets
(grouped 3-D convolutions are the slower kernels there). :func:`choose_forward` picks one per
device and widths; both compute the same function (equal to float tolerance).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from HyperSORTLib.config import FORWARD_STRATEGIES


def _check(weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> int:
    batch = x.shape[0]
    for name, tensor in weights.items():
        if tensor.shape[0] != batch:
            raise ValueError(f"Generated weight '{name}' has batch size {tensor.shape[0]} but the input "
                             f"has {batch} samples; give one weight set per sample.")
    return batch


def batched_forward(net: nn.Module, weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run ``net`` on each ``x[b]`` with its own parameters ``{k: v[b]}``, in one pass.

    Args:
        net: the target network (its own parameters are ignored).
        weights: parameter name -> tensor of shape [B, *parameter shape].
        x: input batch [B, C, X, Y, Z].

    Returns:
        The stacked outputs [B, ...], equal to :func:`looped_forward` to float tolerance.
    """
    _check(weights, x)

    def single(sample_weights: dict[str, torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
        return functional_call(net, sample_weights, (sample.unsqueeze(0),)).squeeze(0)

    return vmap(single)(dict(weights), x)


def looped_forward(net: nn.Module, weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Reference implementation: one ``functional_call`` per sample, outputs stacked."""
    batch = _check(weights, x)
    outputs = [functional_call(net, {k: v[b] for k, v in weights.items()}, (x[b:b + 1],))
               for b in range(batch)]
    return torch.cat(outputs, dim=0)


#: Widest UNet level (channels) up to which ``auto`` runs the batched pass, per device type.
#: CPU, measured (``benchmarks/train_step.py``): with 8-64 channels the batched step is 2.2x
#: faster than the loop, with 16-128 channels (the reference UNet) the loop is 1.6x faster.
#: CUDA: the same threshold until measured (cuDNN's grouped 3-D convolutions are likewise its
#: slower kernels at large widths, while small widths gain from fewer, larger launches).
BATCHED_MAX_WIDTH = {"cpu": 64, "cuda": 64}


def choose_forward(strategy: str, device: torch.device | str, channels: Sequence[int]) -> str:
    """``"batched"`` or ``"loop"``: ``strategy`` itself, or for ``"auto"`` the batched pass when
    the widest level has at most :data:`BATCHED_MAX_WIDTH` channels on ``device``'s type, else the loop.

    The choice depends on nothing measured at run time, so a run repeats bit for bit.

    Example:
        >>> choose_forward("auto", "cpu", (8, 16, 32, 64)), choose_forward("auto", "cpu", (16, 32, 64, 128))
        ('batched', 'loop')
    """
    if strategy not in FORWARD_STRATEGIES:
        raise ValueError(f"Unknown forward strategy {strategy!r}; expected one of {', '.join(FORWARD_STRATEGIES)}.")
    if strategy != "auto":
        return strategy
    limit = BATCHED_MAX_WIDTH.get(torch.device(device).type, BATCHED_MAX_WIDTH["cpu"])
    return "batched" if max(channels) <= limit else "loop"


def forward_function(strategy: str) -> Callable[[nn.Module, Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """:func:`batched_forward` or :func:`looped_forward` for ``"batched"`` or ``"loop"``."""
    functions = {"batched": batched_forward, "loop": looped_forward}
    if strategy not in functions:
        raise ValueError(f"Forward strategy {strategy!r} is not a resolved one; expected batched or loop "
                         f"(choose_forward resolves auto).")
    return functions[strategy]
