"""The compute device: one spelling (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``) for every entry point,
and the 16-bit type a UNet runs fastest in on it."""

from __future__ import annotations

import torch

#: Default of every ``--device`` option and ``device=`` argument.
DEFAULT_DEVICE = "auto"


def resolve_device(name: str | torch.device | None = DEFAULT_DEVICE) -> torch.device:
    """``"auto"`` (or ``None``) -> CUDA when available, else CPU; an unavailable CUDA request is an error."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"Unknown device {name!r}: expected auto, cpu, cuda or cuda:N.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device '{name}' was requested but this PyTorch build sees no CUDA GPU; "
                         f"use --device cpu (or install a CUDA build of PyTorch).")
    return device


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """The 16-bit type a UNet runs fastest in on ``device`` under autocast, or ``None`` for float32.

    CUDA: bfloat16 where the GPU supports it, else float16. CPU: bfloat16 where the processor
    computes it natively (AVX512-BF16 or AMX: oneDNN then convolves about 2.5-3x faster than in
    float32); on other processors bfloat16 is emulated and slower, so ``None``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, torch >= 2.2
        if any(getattr(torch.cpu, name, lambda: False)() for name in probes):
            return torch.bfloat16
    return None
