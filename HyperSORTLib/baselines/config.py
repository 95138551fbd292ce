"""Settings of the robust-training baselines, as frozen dataclasses that reject unknown keys.

The UNet, the data, the epochs, the batch size, the optimiser and the seed come from the
:class:`~HyperSORTLib.config.RunConfig` shared with HyperSORT, so every method trains the same
network on the same data with the same budget; these classes hold only what a method adds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from HyperSORTLib.config import ConfigError, _require, _suggest, from_dict, to_dict

#: The methods ``hypersort baseline --method`` trains.
METHODS = ("unet", "mcpm", "pint", "ce-threshold")


@dataclass(frozen=True)
class MCPMConfig:
    """Meta Corrupted Pixels Mining (Wang et al., MICCAI 2020).

    Args:
        virtual_lr: learning rate of the virtual (look-ahead) SGD step of the UNet's head.
        mask_lr: Adam learning rate of the meta mask network.
        mask_hidden: channels of the mask network's hidden layer.
        mask_init_weight: the voxel weight the mask network starts near (sigmoid of its
            output bias), so training starts close to the unweighted loss.
    """

    virtual_lr: float = 0.1
    mask_lr: float = 1e-3
    mask_hidden: int = 8
    mask_init_weight: float = 0.9

    def __post_init__(self) -> None:
        _require(self.virtual_lr > 0, "mcpm.virtual_lr", "a positive number", self.virtual_lr)
        _require(self.mask_lr > 0, "mcpm.mask_lr", "a positive number", self.mask_lr)
        _require(self.mask_hidden >= 1, "mcpm.mask_hidden", "an integer >= 1", self.mask_hidden)
        _require(0 < self.mask_init_weight < 1, "mcpm.mask_init_weight", "a number in (0, 1)",
                 self.mask_init_weight)


@dataclass(frozen=True)
class PINTConfig:
    """Pixel- and image-level noise-tolerant learning (Shi & Wu, MICCAI 2021).

    Args:
        ema_decay: ``g`` in ``theta_teacher = g * theta_teacher + (1 - g) * theta`` after every step.
        perturbations: input perturbations the teacher is run under per step.
        noise_std: standard deviation of the Gaussian noise added to the (normalised) image.
        warmup_epochs: epochs of plain cross-entropy before the teacher is trusted.
        voxel_weight: weight of the voxel-level loss.
        slice_weight: weight of the slice-level loss (slices along the last axis).
    """

    ema_decay: float = 0.99
    perturbations: int = 4
    noise_std: float = 0.1
    warmup_epochs: int = 1
    voxel_weight: float = 1.0
    slice_weight: float = 1.0

    def __post_init__(self) -> None:
        _require(0 <= self.ema_decay < 1, "pint.ema_decay", "a number in [0, 1)", self.ema_decay)
        _require(self.perturbations >= 1, "pint.perturbations", "an integer >= 1", self.perturbations)
        _require(self.noise_std >= 0, "pint.noise_std", "a number >= 0", self.noise_std)
        _require(self.warmup_epochs >= 0, "pint.warmup_epochs", "an integer >= 0", self.warmup_epochs)
        _require(self.voxel_weight >= 0 and self.slice_weight >= 0 and self.voxel_weight + self.slice_weight > 0,
                 "pint.voxel_weight/slice_weight", "non-negative weights, not both 0",
                 (self.voxel_weight, self.slice_weight))


@dataclass(frozen=True)
class BaselineConfig:
    """Which baseline to train and its own settings.

    Args:
        method: one of :data:`METHODS`.
        mcpm: settings of ``mcpm``.
        pint: settings of ``pint``.

    Example:
        >>> BaselineConfig(method="pint").record()["name"]
        'pint'
    """

    method: str = "unet"
    mcpm: MCPMConfig = field(default_factory=MCPMConfig)
    pint: PINTConfig = field(default_factory=PINTConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method: expected one of {', '.join(METHODS)}, found {self.method!r}."
                              f"{_suggest(self.method, METHODS)}")

    @property
    def decision(self) -> str:
        """How probabilities become labels at inference (see :data:`HyperSORTLib.model.plain.DECISIONS`)."""
        return "marginal-threshold" if self.method == "ce-threshold" else "argmax"

    def record(self) -> dict[str, Any]:
        """What the run's ``config.json`` records as its method (compared on resume)."""
        settings = {"mcpm": to_dict(self.mcpm), "pint": to_dict(self.pint)}.get(self.method, {})
        return {"name": self.method, "decision": self.decision, "settings": settings}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BaselineConfig":
        return from_dict(cls, data)

    @classmethod
    def from_file(cls, path: str | Path, method: str | None = None) -> "BaselineConfig":
        """Read a YAML file (keys ``method``, ``mcpm``, ``pint``); ``method`` overrides the file's."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"Cannot read the baseline configuration {path}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}.")
        try:
            config = cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return dataclasses.replace(config, method=method) if method else config
