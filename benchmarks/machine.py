"""The machine line every benchmark table carries (CPU model, threads, GPU, torch version)."""

from __future__ import annotations

import os
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
    """``"<CPU>, N threads[, <GPU>, CUDA X], torch X"`` for a torch device (or its name)."""
    import torch

    device = torch.device(device)
    gpu = f", {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    return f"{cpu_model()}, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}"


def machine_record(device: object = "cpu") -> dict:
    """The machine as a JSON-ready dict: CPU, cores, threads, the GPUs torch sees, torch / CUDA / cuDNN versions."""
    import torch

    device = torch.device(device)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"description": describe(device), "device": str(device), "cpu": cpu_model(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "gpus": gpus, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": cudnn, "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
