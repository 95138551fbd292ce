"""Running one network with different weights per sample.

Each sample of a batch has its own generated UNet. :func:`batched_forward` runs all of them in
one pass: ``torch.func.vmap`` over ``functional_call`` lowers every convolution with
per-sample kernels to a single grouped convolution (kernels stacked to
[B*C_out, C_in, k, k, k], ``groups=B``) and the per-sample instance-norm affine to a
broadcast. :func:`looped_forward` is the plain per-sample loop (the reference release's way),
kept as the oracle the batched path is tested against and as the benchmark baseline.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.func import functional_call, vmap


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
