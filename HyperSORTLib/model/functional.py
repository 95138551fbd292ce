"""Running one network with different weights per sample.

Each sample of a batch has its own generated UNet. :func:`batched_forward` runs all of them in
one pass: every convolution with per-sample kernels becomes a single grouped convolution
(kernels stacked to [B*C_out, C_in, k, k, k], ``groups=B``) and the per-sample instance-norm
affine a per-channel one. For :class:`~HyperSORTLib.model.unet.UNet3D` the pass is written out
(:func:`grouped_unet_forward`), so that on CPU its activations can be kept channels-last
(oneDNN's grouped 3-D convolutions, their backward above all, run 1.5-4x faster in that layout
at the demo's widths); any other network goes through ``torch.func.vmap`` over
``functional_call``, which lowers to the same grouped convolutions in the default layout.
:func:`looped_forward` is the plain per-sample loop (the reference release's way), the oracle
the batched path is tested against, and the faster of the two for very wide UNets (grouped
3-D convolutions are the slower kernels there). :func:`choose_forward` picks one per device and
widths; both compute the same function (equal to float tolerance).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from HyperSORTLib.config import FORWARD_STRATEGIES
from HyperSORTLib.model.unet import ConvBlock, UNet3D, UpBlock, match_skip


def _check(weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> int:
    batch = x.shape[0]
    for name, tensor in weights.items():
        if tensor.shape[0] != batch:
            raise ValueError(f"Generated weight '{name}' has batch size {tensor.shape[0]} but the input "
                             f"has {batch} samples; give one weight set per sample.")
    return batch


def batched_forward(net: nn.Module, weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run ``net`` on each ``x[b]`` with its own parameters ``{k: v[b]}``, in one pass.

    A :class:`UNet3D` runs through :func:`grouped_unet_forward` (channels-last activations on
    CPU), any other module through ``vmap`` over ``functional_call``.

    Args:
        net: the target network (its own parameters are ignored).
        weights: parameter name -> tensor of shape [B, *parameter shape].
        x: input batch [B, C, X, Y, Z].

    Returns:
        The stacked outputs [B, ...], equal to :func:`looped_forward` to float tolerance.
    """
    if type(net) is UNet3D:
        return grouped_unet_forward(net, weights, x, channels_last=x.device.type == "cpu")
    return vmap_forward(net, weights, x)


def vmap_forward(net: nn.Module, weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """:func:`batched_forward` for any module: ``vmap`` over ``functional_call``, which lowers
    per-sample convolutions to grouped ones in the default layout."""
    _check(weights, x)

    def single(sample_weights: dict[str, torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
        return functional_call(net, sample_weights, (sample.unsqueeze(0),)).squeeze(0)

    return vmap(single)(dict(weights), x)


def grouped_unet_forward(net: UNet3D, weights: Mapping[str, torch.Tensor], x: torch.Tensor,
                         channels_last: bool = False) -> torch.Tensor:
    """:class:`UNet3D`'s forward for B samples with their own weights, as grouped operations.

    The B samples' activations are stacked along the channel axis ([1, B*C, X, Y, Z], sample-major)
    and every convolution is one grouped convolution over them, as ``vmap`` lowers it; the
    layers are read from ``net`` (strides, paddings, norm epsilons), the weights from ``weights``.
    With ``channels_last`` the activations are kept in the channels-last 3-D layout throughout,
    skip concatenations included, which oneDNN's grouped convolutions on CPU run faster.

    Args:
        net: the target UNet (its own parameters are ignored).
        weights: parameter name -> tensor [B, *parameter shape], for every parameter of ``net``.
        x: input batch [B, C, X, Y, Z].
        channels_last: keep the activations channels-last (the CPU's faster layout).

    Returns:
        The logits [B, num_classes, X, Y, Z] (contiguous).
    """
    batch = _check(weights, x)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format

    def stacked(name: str) -> torch.Tensor:  # [B, n, ...] -> [B*n, ...]
        tensor = weights[name]
        return tensor.reshape(-1, *tensor.shape[2:])

    def conv(prefix: str, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        weight, bias = stacked(f"{prefix}.weight"), stacked(f"{prefix}.bias")
        if isinstance(layer, nn.ConvTranspose3d):
            return F.conv_transpose3d(h, weight, bias, stride=layer.stride, padding=layer.padding,
                                      output_padding=layer.output_padding, groups=batch, dilation=layer.dilation)
        return F.conv3d(h, weight, bias, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                        groups=batch)

    def block(prefix: str, module: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if not isinstance(module, (ConvBlock, UpBlock)):
            raise TypeError(f"grouped_unet_forward: unexpected layer {prefix} ({type(module).__name__}).")
        h = torch.relu(conv(f"{prefix}.conv", module.conv, h))
        # With one stacked "sample", batch statistics are each sample's own per channel: instance
        # norm. Written as batch_norm because instance_norm's backward is wrong for a channels-last
        # incoming gradient (torch 2.13-2.15, CPU; Testing/model/test_model.py checks the result).
        return F.batch_norm(h, None, None, weight=stacked(f"{prefix}.norm.weight"),
                            bias=stacked(f"{prefix}.norm.bias"), training=True, eps=module.norm.eps)

    def concat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per sample, ``a``'s channels then ``b``'s: [1, B*Ca, ...], [1, B*Cb, ...] -> [1, B*(Ca+Cb), ...]."""
        if channels_last:  # concatenate in the physical (X, Y, Z, B, C) order, so no copy leaves the layout
            a5, b5 = (t.permute(0, 2, 3, 4, 1).unflatten(-1, (batch, -1)) for t in (a, b))
            return torch.cat([a5, b5], dim=-1).flatten(-2).permute(0, 4, 1, 2, 3)
        return torch.cat([a.unflatten(1, (batch, -1)), b.unflatten(1, (batch, -1))], dim=2).flatten(1, 2)

    h = x.reshape(1, -1, *x.shape[2:]).contiguous(memory_format=layout)
    skips = []
    for level, encoder in enumerate(net.encoders):
        for index, module in enumerate(encoder):
            h = block(f"encoders.{level}.{index}", module, h)
        skips.append(h)
    skips.pop()  # the coarsest level feeds the decoder directly
    for level, (upsample, decoder) in enumerate(zip(net.upsamplers, net.decoders)):
        skip = skips.pop()
        h = concat(match_skip(block(f"upsamplers.{level}", upsample, h), skip), skip)
        for index, module in enumerate(decoder):
            h = block(f"decoders.{level}.{index}", module, h)
    logits = conv("head", net.head, h)
    return logits.reshape(batch, -1, *logits.shape[2:]).contiguous()


def looped_forward(net: nn.Module, weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Reference implementation: one ``functional_call`` per sample, outputs stacked."""
    batch = _check(weights, x)
    outputs = [functional_call(net, {k: v[b] for k, v in weights.items()}, (x[b:b + 1],))
               for b in range(batch)]
    return torch.cat(outputs, dim=0)


#: Widest UNet level (channels) up to which ``auto`` runs the batched pass, per device type.
#: CPU, measured with the channels-last grouped pass (``benchmarks/train_step.py``, batch 4 / 2):
#: the batched step is 4.4x faster than the loop with 8-64 channels, 1.45x with 16-128 channels
#: and one convolution per level, and even (1.02x, in less memory) with the reference UNet's
#: 16-128 channels and three convolutions per level. CUDA: 64 until measured (cuDNN's grouped
#: 3-D convolutions are its slower kernels at large widths, while small widths gain from fewer,
#: larger launches).
BATCHED_MAX_WIDTH = {"cpu": 128, "cuda": 64}


def choose_forward(strategy: str, device: torch.device | str, channels: Sequence[int]) -> str:
    """``"batched"`` or ``"loop"``: ``strategy`` itself, or for ``"auto"`` the batched pass when
    the widest level has at most :data:`BATCHED_MAX_WIDTH` channels on ``device``'s type, else the loop.

    The choice depends on nothing measured at run time, so a run repeats bit for bit.

    Example:
        >>> choose_forward("auto", "cpu", (16, 32, 64, 128)), choose_forward("auto", "cuda", (16, 32, 64, 128))
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
