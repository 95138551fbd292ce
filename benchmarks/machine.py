"""The machine line every benchmark table carries (CPU model, threads, GPU, torch version)."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        return names[0] if names else model
    except OSError:
        return model


def describe(device: object = "cpu") -> str:
    """``"<CPU>, N threads[, <GPU>], torch X"`` for a torch device (or its name)."""
    import torch

    device = torch.device(device)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return f"{cpu_model()}, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}"
