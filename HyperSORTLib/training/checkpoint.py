"""The run directory: everything a training run writes, written atomically.

Layout::

    RUN_DIR/
      config.json         run configuration, class names, case ids, library and format version
      model.safetensors   learned weights (generator + latent table); loads without running code
      latents.csv         case id, latent coordinates, last training loss per sample
      train_log.csv       one row per epoch
      checkpoint.pt       full training state for resuming (tensors and plain values only,
                          loaded with ``torch.load(weights_only=True)``)

Every file is replaced atomically, so a run killed at any moment leaves the previous complete
version of each file; resuming reads ``checkpoint.pt`` alone.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file

from HyperSORTLib import RUN_FORMAT_VERSION, __version__
from HyperSORTLib.config import RunConfig
from HyperSORTLib.utils.io import atomic_path, atomic_write_json, atomic_write_text

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
LATENTS_FILE = "latents.csv"
LOG_FILE = "train_log.csv"


class RunDirectoryError(ValueError):
    """A run directory is missing, incomplete or from an incompatible version."""


def write_run_config(run_dir: Path, config: RunConfig, case_ids: Sequence[str],
                     data_source: dict[str, Any] | None = None) -> None:
    """Write ``config.json``; ``data_source`` records where the training cases came from
    (e.g. ``{"path": ..., "format": ...}``) so analysis can find them again."""
    atomic_write_json(run_dir / CONFIG_FILE, {
        "format": "hypersort-run",
        "format_version": RUN_FORMAT_VERSION,
        "library_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "case_ids": list(case_ids),
        "data_source": dict(data_source or {}),
    })


def read_run_config(run_dir: str | Path) -> tuple[RunConfig, list[str], dict[str, Any]]:
    """Read ``config.json``: the configuration, the case ids and the raw document."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} is not a HyperSORT run directory: {path.name} is missing.")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"{path} is not valid JSON: {exc}") from exc
    if doc.get("format") != "hypersort-run":
        raise RunDirectoryError(f"{path} is not a HyperSORT run configuration (format {doc.get('format')!r}).")
    version = doc.get("format_version")
    if version != RUN_FORMAT_VERSION:
        raise RunDirectoryError(
            f"{path} was written by HyperSORT {doc.get('library_version', '?')} in run format {version}; "
            f"this is HyperSORT {__version__}, which reads run format {RUN_FORMAT_VERSION}.")
    return RunConfig.from_dict(doc["config"]), list(doc["case_ids"]), doc


def save_model_weights(run_dir: Path, state: dict[str, torch.Tensor], epoch: int) -> None:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    with atomic_path(run_dir / MODEL_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "hypersort-model", "epoch": str(epoch),
                                               "library_version": __version__})


def load_model_weights(run_dir: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} has no trained weights yet ({path.name} is missing).")
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise RunDirectoryError(f"{path} could not be read (truncated or not a safetensors file): {exc}") from exc


def save_training_state(run_dir: Path, state: dict[str, Any]) -> None:
    with atomic_path(run_dir / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)


def load_training_state(run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint, or ``None`` if the run has none yet. Never executes pickled code."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunDirectoryError(f"Checkpoint {path} could not be loaded ({exc}); delete it to restart the run "
                                f"from scratch.") from exc


def write_latents_csv(run_dir: Path, case_ids: Sequence[str], latents: torch.Tensor,
                      losses: torch.Tensor | None = None) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    dims = latents.shape[1]
    writer.writerow(["case_id", *[f"z{i + 1}" for i in range(dims)], "loss"])
    for i, case_id in enumerate(case_ids):
        loss = "" if losses is None or not torch.isfinite(losses[i]) else f"{float(losses[i]):.6g}"
        writer.writerow([case_id, *[f"{float(v):.8g}" for v in latents[i]], loss])
    atomic_write_text(run_dir / LATENTS_FILE, buffer.getvalue())


def write_train_log(run_dir: Path, history: Sequence[dict[str, Any]]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / LOG_FILE, buffer.getvalue())
