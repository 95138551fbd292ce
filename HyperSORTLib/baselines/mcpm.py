"""MCPM: a meta mask network weights the per-voxel loss map, trained on a small clean meta set.

Meta-Weight-Net style (Wang et al., MICCAI 2020): (1) a virtual SGD step of the segmentation
network on the mask-weighted loss, keeping the graph; (2) the loss of that look-ahead network on
a clean meta batch is differentiated with respect to the mask network, which takes an Adam step;
(3) the updated mask network weights the loss of the real step.

Approximation (last layers): the virtual step moves only the UNet's final convolution
(``unet.head``); the features below it are held fixed during the look-ahead. The meta-gradient
is then exact for that restricted look-ahead, second order through the head (``create_graph``),
at the cost of one extra pass of the head instead of a second-order pass of the whole 3-D UNet.
The mask network reads the per-voxel cross-entropy map as data (no gradient flows through its
input), as Meta-Weight-Net reads the loss values.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from HyperSORTLib.model.unet import UNet3D

#: ``(logits, labels) -> per-sample loss [B]``.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class MaskNet(nn.Module):
    """Per-voxel weights in (0, 1) from a per-voxel loss map [B, 1, X, Y, Z].

    A 3x3x3 convolution (so a voxel's weight sees its neighbours' losses), ReLU, a 1x1x1
    convolution and a sigmoid. The output bias starts at ``logit(init_weight)`` and the last
    weights at zero, so every voxel starts with weight ``init_weight``.

    Args:
        hidden: channels of the hidden layer.
        init_weight: the initial voxel weight.
    """

    def __init__(self, hidden: int = 8, init_weight: float = 0.9) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, hidden, kernel_size=3, padding=1)
        self.out = nn.Conv3d(hidden, 1, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, math.log(init_weight / (1 - init_weight)))

    def forward(self, loss_map: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(torch.relu(self.conv(loss_map))))


def voxel_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per voxel [B, X, Y, Z] of logits [B, K, ...] against labels [B, 1, ...]."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, labels[:, 0].long(), reduction="none")


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, mask_net: MaskNet) -> torch.Tensor:
    """The mask-weighted cross-entropy, one value per sample (the mask network reads the loss as data)."""
    ce = voxel_ce(logits, labels)
    weights = mask_net(ce.detach()[:, None])[:, 0]
    return (weights * ce).flatten(1).mean(1)


def _head(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, unet: UNet3D) -> torch.Tensor:
    conv = unet.head
    return F.conv3d(features, weight, bias, stride=conv.stride, padding=conv.padding)


def lookahead_meta_loss(unet: UNet3D, mask_net: MaskNet, image: torch.Tensor, labels: torch.Tensor,
                        meta_image: torch.Tensor, meta_labels: torch.Tensor, virtual_lr: float,
                        meta_loss: LossFn) -> torch.Tensor:
    """The clean meta loss after a virtual SGD step of ``unet.head`` on the mask-weighted loss.

    Differentiable with respect to the mask network's parameters (through the virtual step);
    the UNet's parameters receive no gradient from it when differentiated with
    ``torch.autograd.grad(..., mask_net.parameters())``.

    Args:
        image, labels: the (noisy) training batch.
        meta_image, meta_labels: a clean meta batch.
        virtual_lr: step size of the virtual step.
        meta_loss: ``(logits, labels) -> per-sample loss [B]`` on the meta batch.
    """
    with torch.no_grad():
        features = unet.features(image)
        meta_features = unet.features(meta_image)
    weight, bias = unet.head.weight, unet.head.bias
    inner = weighted_ce(_head(features, weight, bias, unet), labels, mask_net).mean()
    grad_w, grad_b = torch.autograd.grad(inner, (weight, bias), create_graph=True)
    ahead = _head(meta_features, weight - virtual_lr * grad_w, bias - virtual_lr * grad_b, unet)
    return meta_loss(ahead, meta_labels).mean()


def meta_step(unet: UNet3D, mask_net: MaskNet, mask_optimizer: torch.optim.Optimizer, image: torch.Tensor,
              labels: torch.Tensor, meta_image: torch.Tensor, meta_labels: torch.Tensor, virtual_lr: float,
              meta_loss: LossFn) -> float:
    """Steps (1) and (2): update the mask network from the look-ahead's meta loss; returns that loss."""
    loss = lookahead_meta_loss(unet, mask_net, image, labels, meta_image, meta_labels, virtual_lr, meta_loss)
    grads = torch.autograd.grad(loss, list(mask_net.parameters()))
    mask_optimizer.zero_grad(set_to_none=True)
    for param, grad in zip(mask_net.parameters(), grads):
        param.grad = grad
    mask_optimizer.step()
    return float(loss.detach())
