"""The target network: a plain multi-class 3D UNet.

It is an ordinary ``nn.Module``: it can be trained, saved and run on its own. The
hyper-network never patches it; generated weights are passed in as a dictionary through
``torch.func.functional_call`` (see :mod:`HyperSORTLib.model.functional`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from HyperSORTLib.config import UNetConfig


class InstanceNorm3d(nn.InstanceNorm3d):
    """Instance normalisation that keeps a single volume's memory layout.

    For one volume (batch size 1), instance statistics are batch statistics, so it runs as
    ``batch_norm``, which normalises a ``channels_last_3d`` tensor in place of layout, where
    ``instance_norm`` first copies it to the contiguous layout and back (a third of a CPU
    inference pass). Larger batches run as ``instance_norm``. Same parameters, same function.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 5 and input.shape[0] == 1 and not self.track_running_stats:
            return F.batch_norm(input, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(input)


class ConvBlock(nn.Sequential):
    """3x3x3 convolution -> ReLU -> instance norm with affine parameters (reference order)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(OrderedDict(
            conv=nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            act=nn.ReLU(),
            norm=InstanceNorm3d(out_channels, affine=True),
        ))


class UpBlock(nn.Sequential):
    """4x4x4 stride-2 transposed convolution -> ReLU -> instance norm: doubles the size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict(
            conv=nn.ConvTranspose3d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
            act=nn.ReLU(),
            norm=InstanceNorm3d(out_channels, affine=True),
        ))


def match_skip(upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``upsampled`` cropped to ``skip``'s spatial size, for the skip concatenation.

    A stride-2 convolution halves an odd size rounding up (13 -> 7) and the transposed convolution
    doubles it (7 -> 14), one voxel past the skip's size at the far end, which is dropped. On sizes
    that are multiples of :attr:`UNetConfig.divisor` (every training patch) it is ``upsampled``.
    """
    if upsampled.shape[2:] == skip.shape[2:]:
        return upsampled
    return upsampled[:, :, :skip.shape[2], :skip.shape[3], :skip.shape[4]]


class UNet3D(nn.Module):
    """Multi-class 3D UNet with skip concatenation and no deep supervision.

    Each encoder level starts with an entry block (the input convolution at the first level, a
    stride-2 convolution below it) followed by ``convs_per_level`` blocks; each decoder level
    starts with a transposed convolution, concatenates the encoder's features of the same
    resolution and applies ``convs_per_level`` blocks. A final 3x3x3 convolution produces one
    logit per class. With the defaults (16/32/64/128 channels, 3 convolutions per level,
    2 classes) it has 3.33 M parameters in 114 tensors, the reference HyperSORT UNet.

    Args:
        in_channels: image channels.
        num_classes: output classes, background included.
        channels: channels per level, finest first.
        convs_per_level: convolution blocks per level.

    Example:
        >>> net = UNet3D(num_classes=3, channels=(8, 16), convs_per_level=2)
        >>> net(torch.zeros(1, 1, 16, 16, 16)).shape
        torch.Size([1, 3, 16, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        convs_per_level: int = 3,
    ) -> None:
        super().__init__()
        self.config = UNetConfig(in_channels=in_channels, num_classes=num_classes,
                                 channels=tuple(int(c) for c in channels), convs_per_level=convs_per_level)
        chs = self.config.channels
        self.encoders = nn.ModuleList()
        for level, width in enumerate(chs):
            # the entry block maps the input (level 0) or halves the size (below), then
            # ``convs_per_level`` blocks keep it, as in the reference release
            entry = ConvBlock(in_channels, width) if level == 0 else ConvBlock(chs[level - 1], width, stride=2)
            blocks = [entry] + [ConvBlock(width, width) for _ in range(convs_per_level)]
            self.encoders.append(nn.Sequential(*blocks))
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(len(chs) - 1, 0, -1):
            width = chs[level - 1]
            self.upsamplers.append(UpBlock(chs[level], width))
            blocks = [ConvBlock(2 * width, width)]
            blocks += [ConvBlock(width, width) for _ in range(convs_per_level - 1)]
            self.decoders.append(nn.Sequential(*blocks))
        self.head = nn.Conv3d(chs[0], num_classes, kernel_size=3, padding=1)

    @classmethod
    def from_config(cls, config: UNetConfig) -> "UNet3D":
        return cls(config.in_channels, config.num_classes, config.channels, config.convs_per_level)

    def check_input_shape(self, shape: Sequence[int]) -> None:
        """Raise ``ValueError`` unless ``shape`` ([B,] C, X, Y, Z) fits this network.

        Any spatial size fits (see :func:`match_skip`); training patches are multiples of
        :attr:`UNetConfig.divisor` (``RunConfig`` checks it), so that no level drops a voxel.
        """
        if len(shape) < 4 or shape[-4] != self.config.in_channels or any(int(s) < 1 for s in shape[-3:]):
            raise ValueError(f"UNet3D expects input of shape [B, {self.config.in_channels}, X, Y, Z], "
                             f"found {tuple(shape)}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The finest decoder level's features, which ``head`` maps to one logit per class."""
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        skips.pop()  # the coarsest level feeds the decoder directly
        for upsample, decoder in zip(self.upsamplers, self.decoders):
            skip = skips.pop()
            x = decoder(torch.cat([match_skip(upsample(x), skip), skip], dim=1))
        return x
