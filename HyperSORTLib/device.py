"""The compute device: one spelling (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``) for every entry point."""

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
