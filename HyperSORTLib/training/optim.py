"""The Adam optimiser of every network the trainers update (the weight generator, a plain UNet).

PyTorch's fused Adam runs the whole update of a tensor in one kernel. It follows the same
algorithm as the default (multi-tensor) implementation and differs only in float rounding, but
it reads and writes the parameters and both moments once per step instead of once per
arithmetic operation. On 2 CPU cores that makes the step of the demo generator's 24 M head
parameters about 6x faster (0.17 s -> 0.03 s; ``benchmarks/train_step.py``), which is most of
what a generated-weights step costs beyond a plain UNet step.
"""

from __future__ import annotations

from typing import Iterable

import torch

#: Device types on which every supported PyTorch (>= 2.4) has the fused Adam kernel.
FUSED_DEVICES = frozenset({"cpu", "cuda"})


def adam(parameters: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """``torch.optim.Adam`` over ``parameters``, fused where the device has the kernel.

    Floating-point parameters on CPU or CUDA get ``fused=True``; anything else (another device
    type, a mix of devices) gets PyTorch's default implementation. A checkpoint's optimiser
    state loads into either, and ``load_state_dict`` brings the saved choice with it: a run
    resumes with the implementation it was started with.
    """
    parameters = list(parameters)
    devices = {p.device.type for p in parameters}
    fused = bool(parameters) and devices <= FUSED_DEVICES and len(devices) == 1 and all(
        p.is_floating_point() for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=True if fused else None)
