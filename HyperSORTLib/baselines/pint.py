"""PINT: an EMA teacher under input perturbations; labels trusted where it is certain.

Shi & Wu (MICCAI 2021). The teacher is an exponential moving average of the student
(``theta_t = g * theta_t + (1 - g) * theta`` after every step, ``g`` ramped up from 0 by
:func:`ema_decay_at`). Each step it segments the batch
under several Gaussian-noise perturbations of the input; its mean prediction is the pseudo
label and the entropy of that mean, divided by ``log K`` so it lies in [0, 1], is the voxel
uncertainty ``u``. A voxel's weight on its label is ``a = 1 - u`` (decreasing in uncertainty):

* voxel level: ``L_v = a_v * CE(f_v, y_v) + (1 - a_v) * MSE(p_v, pseudo_v)``, averaged over voxels,
  with ``p`` the student's softmax and the MSE summed over classes;
* slice level (slices along the last axis): ``a_i = 1 - mean_{v in i} u_v`` weighs the slice's
  mean cross-entropy against its mean MSE, so uncertain but correct boundary voxels of a
  confident slice keep their label.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher = decay * teacher + (1 - decay) * student`` for every parameter and float buffer."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s.detach(), alpha=1 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.dtype.is_floating_point:
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)
        else:
            t.copy_(s)


def ema_decay_at(step: int, decay: float) -> float:
    """The teacher's decay at optimisation step ``step`` (0 for the first): ``min(decay, 1 - 1 / (step + 1))``.

    As in the mean-teacher reference implementation, the teacher is the running mean of the
    student's weights while fewer than ``1 / (1 - decay)`` steps have been taken, so it does not
    keep the random initial weights through a short run (with 0.99 and no ramp, 55 % of them
    after 60 steps).

    Example:
        >>> [round(ema_decay_at(t, 0.99), 3) for t in (0, 1, 3, 1000)]
        [0.0, 0.5, 0.75, 0.99]
    """
    return min(float(decay), 1.0 - 1.0 / (int(step) + 1))


def normalised_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy over the class axis (1) divided by ``log K``: [B, ...] in [0, 1]."""
    k = probs.shape[1]
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(1)
    return (entropy / math.log(k)).clamp(0.0, 1.0) if k > 1 else torch.zeros_like(entropy)


@torch.no_grad()
def teacher_prediction(teacher: nn.Module, image: torch.Tensor, perturbations: int, noise_std: float,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's mean softmax over ``perturbations`` noisy copies of ``image`` and its
    normalised entropy: ``(pseudo [B, K, ...], uncertainty [B, ...])``."""
    total = None
    for _ in range(perturbations):
        noise = torch.randn(image.shape, generator=generator, dtype=image.dtype).to(image.device) * noise_std
        probs = torch.softmax(teacher(image + noise).float(), dim=1)
        total = probs if total is None else total + probs
    pseudo = total / perturbations
    return pseudo, normalised_entropy(pseudo)


def pint_loss(logits: torch.Tensor, labels: torch.Tensor, pseudo: torch.Tensor, uncertainty: torch.Tensor,
              weights: Sequence[float] = (1.0, 1.0)) -> torch.Tensor:
    """Per-sample PINT loss [B]: ``weights[0]`` * voxel level + ``weights[1]`` * slice level.

    Args:
        logits: student logits [B, K, X, Y, Z].
        labels: given labels [B, 1, X, Y, Z].
        pseudo: teacher's mean prediction [B, K, X, Y, Z].
        uncertainty: voxel uncertainty in [0, 1], [B, X, Y, Z].
    """
    if pseudo.shape != logits.shape or uncertainty.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"PINT expects pseudo labels of shape {tuple(logits.shape)} and uncertainty of shape "
                         f"{tuple(logits.shape[:1] + logits.shape[2:])}; found {tuple(pseudo.shape)} and "
                         f"{tuple(uncertainty.shape)}.")
    ce = F.cross_entropy(logits.float(), labels[:, 0].long(), reduction="none")
    mse = ((torch.softmax(logits.float(), dim=1) - pseudo) ** 2).sum(1)
    trust = 1.0 - uncertainty
    voxel = (trust * ce + (1 - trust) * mse).flatten(1).mean(1)
    slice_trust = 1.0 - uncertainty.flatten(1, -2).mean(1)  # [B, Z]
    slice_ce, slice_mse = ce.flatten(1, -2).mean(1), mse.flatten(1, -2).mean(1)
    per_slice = (slice_trust * slice_ce + (1 - slice_trust) * slice_mse).mean(1)
    return weights[0] * voxel + weights[1] * per_slice
