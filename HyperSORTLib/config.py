"""Typed, frozen configuration for models and training runs.

Every section is a frozen dataclass. Configurations come from YAML or JSON dictionaries
through :func:`from_dict`, which rejects unknown keys (suggesting the closest valid name), so
a typo fails loudly instead of silently falling back to a default. The command line only
fills these objects.

Example:
    >>> cfg = RunConfig.from_dict({"train": {"epochs": 5}, "model": {"unet": {"num_classes": 3}}})
    >>> cfg.train.epochs, cfg.model.unet.channels
    (5, (16, 32, 64, 128))
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TypeVar

T = TypeVar("T")

#: Origins of ``Optional[X]`` / ``X | None`` annotations (``types.UnionType`` exists from Python 3.10;
#: Slicer 5.8 runs Python 3.9).
_UNION_ORIGINS = tuple({typing.Union, getattr(types, "UnionType", typing.Union)})


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


def _suggest(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _require(condition: bool, where: str, expected: str, found: Any) -> None:
    if not condition:
        raise ConfigError(f"{where}: expected {expected}, found {found!r}.")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the target 3D UNet whose weights the hyper-network generates.

    Defaults are the reference HyperSORT configuration (4 levels of 16/32/64/128 channels,
    3 convolutions per level), made multi-class.

    Args:
        in_channels: image channels (1 for CT).
        num_classes: output classes including background (2 = binary).
        channels: feature channels per resolution level, coarsest last.
        convs_per_level: 3x3x3 convolution blocks at each level after its entry block
            (encoder) or its upsampling block (decoder).
    """

    in_channels: int = 1
    num_classes: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 128)
    convs_per_level: int = 3

    def __post_init__(self) -> None:
        _require(self.in_channels >= 1, "model.unet.in_channels", "an integer >= 1", self.in_channels)
        _require(self.num_classes >= 2, "model.unet.num_classes", "an integer >= 2 (background + classes)",
                 self.num_classes)
        _require(len(self.channels) >= 1 and all(int(c) >= 1 for c in self.channels),
                 "model.unet.channels", "a non-empty list of positive integers", self.channels)
        _require(self.convs_per_level >= 1, "model.unet.convs_per_level", "an integer >= 1",
                 self.convs_per_level)

    @property
    def divisor(self) -> int:
        """Training patch sizes are multiples of this, so that no level of the UNet drops a voxel
        (inference takes any size: :func:`HyperSORTLib.model.unet.match_skip`)."""
        return 2 ** (len(self.channels) - 1)


HEAD_KINDS = ("full", "low_rank")


@dataclass(frozen=True)
class HyperNetConfig:
    """The weight generator: a trunk MLP from the latent, then one linear head per UNet tensor.

    Args:
        latent_dim: dimension of each sample's latent vector (2 gives a map that can be read
            directly).
        hidden: widths of the trunk layers (ReLU after each).
        output_scale: generated weights are ``output_scale * tanh(head output)``.
        head_init_gain: scale of the heads' initial weights relative to a default
            ``nn.Linear`` initialisation (1.0 = the reference release; see
            ``init_heads_from_target``).
        heads: ``"full"`` (the reference release: one linear map from the trunk's last layer to
            every UNet value, ``hidden[-1] + 1`` parameters per generated value) or
            ``"low_rank"`` (that map factored through ``head_rank`` features, ``head_rank + 1``
            parameters per generated value: with rank 4 the reference UNet's generator shrinks
            from 170 M to 17 M parameters).
        head_rank: width of the low-rank heads' bottleneck (only with ``heads: low_rank``).
    """

    latent_dim: int = 2
    hidden: tuple[int, ...] = (50, 50, 50)
    output_scale: float = 5.0
    head_init_gain: float = 1.0
    heads: str = "full"
    head_rank: int = 4

    def __post_init__(self) -> None:
        _require(self.latent_dim >= 1, "model.hyper.latent_dim", "an integer >= 1", self.latent_dim)
        _require(len(self.hidden) >= 1 and all(int(h) >= 1 for h in self.hidden),
                 "model.hyper.hidden", "a non-empty list of positive integers", self.hidden)
        _require(self.output_scale > 0, "model.hyper.output_scale", "a positive number", self.output_scale)
        _require(self.head_init_gain >= 0, "model.hyper.head_init_gain", "a number >= 0",
                 self.head_init_gain)
        _require(self.heads in HEAD_KINDS, "model.hyper.heads", f"one of {', '.join(HEAD_KINDS)}",
                 self.heads)
        _require(isinstance(self.head_rank, int) and self.head_rank >= 1, "model.hyper.head_rank",
                 "an integer >= 1", self.head_rank)


@dataclass(frozen=True)
class ModelConfig:
    """Target UNet plus weight generator."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    hyper: HyperNetConfig = field(default_factory=HyperNetConfig)


@dataclass(frozen=True)
class DataConfig:
    """How training images and labels are preprocessed (reference defaults).

    Args:
        class_names: names of the label values 0..K-1, background first; filled from the
            dataset when empty.
        spacing: target voxel spacing in mm (image resampled linearly, labels by nearest
            neighbour); ``None`` keeps each scan's own spacing.
        patch_size: the centre crop (padded where smaller) fed to the network.
        intensity: "percentile" (clip to ``percentiles`` of each scan, rescale to [0, 1]) or
            "window" (clip to the fixed HU ``window``, rescale to [0, 1]).
        percentiles: lower and upper percentiles for "percentile".
        window: lower and upper HU for "window".
        patch_sampling: where the patch is cut from the preprocessed scan (padded with zeros
            where smaller): "center" (the scan's centre; the reference for AMOS),
            "label_center" (the centre of the annotation's bounding box, the same every epoch;
            the reference for TotalSegmentator), "label" (centred on a random annotated voxel of
            a class drawn uniformly among those present) or "random" (uniform). The random
            choices depend only on (train.seed, epoch, case index), so a resumed run repeats them.
        foreground_probability: for "label", the probability of a label-centred patch; the
            other patches are placed at random.
        scale_augmentation: the largest relative zoom of a training patch per axis: each
            visit draws each axis's factor uniformly in [1 - s, 1 + s] (from train.seed, epoch
            and case index, like the placement), so a case's anatomy appears at a slightly
            different size at every visit while an annotation style (a margin, an omitted
            class) stays. 0 (default, the reference) cuts the same patch at every visit. The
            analysis always reads the un-zoomed patch.
        noise_augmentation: standard deviation of Gaussian noise added to the normalised image
            of a training patch at every visit (drawn like the placement, from train.seed, epoch
            and case index), so a case's image differs slightly at every visit; the label is
            untouched. 0 (default, the reference) adds none. The analysis always reads the
            patch without it. On the demo it did not keep the styles apart (benchmarks/RESULTS.md,
            "Noise on each training patch").
    """

    class_names: tuple[str, ...] = ()
    spacing: Optional[tuple[float, float, float]] = (2.0, 2.0, 2.0)
    patch_size: tuple[int, int, int] = (168, 168, 168)
    intensity: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    window: tuple[float, float] = (-1000.0, 1000.0)
    patch_sampling: str = "center"
    foreground_probability: float = 1.0
    scale_augmentation: float = 0.0
    noise_augmentation: float = 0.0

    def __post_init__(self) -> None:
        _require(self.spacing is None or all(s > 0 for s in self.spacing), "data.spacing",
                 "three positive numbers (mm) or null", self.spacing)
        _require(all(p >= 1 for p in self.patch_size), "data.patch_size", "three positive integers",
                 self.patch_size)
        _require(self.intensity in ("percentile", "window"), "data.intensity", "'percentile' or 'window'",
                 self.intensity)
        lo, hi = self.percentiles
        _require(0 <= lo < hi <= 100, "data.percentiles", "0 <= lower < upper <= 100", self.percentiles)
        _require(self.window[0] < self.window[1], "data.window", "lower < upper", self.window)
        _require(len(set(self.class_names)) == len(self.class_names), "data.class_names", "unique names",
                 self.class_names)
        _require(self.patch_sampling in ("center", "label_center", "label", "random"), "data.patch_sampling",
                 "'center', 'label_center', 'label' or 'random'", self.patch_sampling)
        _require(0.0 <= self.foreground_probability <= 1.0, "data.foreground_probability", "a number in [0, 1]",
                 self.foreground_probability)
        _require(0.0 <= self.scale_augmentation < 1.0, "data.scale_augmentation", "a number in [0, 1)",
                 self.scale_augmentation)
        _require(0.0 <= self.noise_augmentation < 1.0, "data.noise_augmentation", "a number in [0, 1)",
                 self.noise_augmentation)


@dataclass(frozen=True)
class TrainConfig:
    """Joint training of the hyper-network and the latent table.

    As in the reference release: Adam 1e-3 for the hyper-network, one Adam per latent (betas
    0.7/0.9), latents initialised N(0, 0.05^2), loss soft Dice + cross-entropy + L1(z). Three
    defaults differ from the release, so that the latent map separates within the configured
    epochs (``training/configs/reference_faithful.yaml`` restores the release exactly):

    * ``latent_lr`` follows the budget: with Adam a latent moves about one learning rate per
      visit, and it is visited once per epoch, so the default is ``LATENT_TRAVEL / epochs``
      (1.2 latent units of travel; 0.02 at 60 epochs, 0.012 at 100, the release's 1e-3 at
      1200), capped at ``MAX_LATENT_LR``. Slower latents stay near the origin for the whole run.
    * ``l1_weight`` is 0.01 instead of 1: at full weight the pull holds every latent within a
      learning rate of the origin until the generator has learnt to use them, which takes
      thousands of epochs.
    * ``absent_class_volume`` is 0.01: an organ omitted by an annotator costs Dice-scale loss
      when drawn, so omission is learnt as a style (0 is the plain soft Dice).

    The trade-off of the faster latents: a latent jitters by about its learning rate around
    where its sample's loss is lowest, so styles closer together than a few learning rates do
    not separate; more epochs give slower, finer latents.

    Args:
        epochs: passes over the training set.
        batch_size: samples per step; each sample runs through its own generated UNet.
        lr: learning rate of the hyper-network.
        betas: Adam betas of the hyper-network.
        latent_lr: learning rate of each latent's Adam; ``None`` (default) for the budget rule
            (see :attr:`effective_latent_lr`).
        latent_betas: Adam betas of each latent.
        latent_init_std: standard deviation of the initial latents.
        latent_scale: how a latent's Adam step is normalised: "row" (each latent by its own
            gradients, the reference) or "table" (all latents by one scale, so a weak pull moves a
            latent less than a strong one; see :class:`~HyperSORTLib.model.latent.RowwiseAdam`).
        latent_warmup_epochs: epochs at the start in which only the generator learns and the
            latents stay where they were initialised (0: the latents learn from the first step).
        l1_weight: weight of the L1 norm of the latent in the loss.
        dice_weight: weight of the soft Dice term.
        ce_weight: weight of the cross-entropy term.
        include_background: whether the soft Dice averages over the background class too.
        absent_class_volume: a class absent from a sample's label costs ``P / (P + a N)`` in the
            soft Dice (``P`` its predicted volume, ``N`` the patch's voxels, ``a`` this fraction)
            instead of a constant without gradient, so an omitted organ is learnt as a style; 0
            is the plain soft Dice of the reference (see :mod:`HyperSORTLib.training.losses`).
        seed: seeds initialisation and the sample order of every epoch.
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
        amp: mixed precision (bfloat16) on CUDA; ignored on CPU.
        forward: how a batch's generated UNets run: "batched" (one ``vmap`` pass, grouped
            convolutions), "loop" (one sample at a time) or "auto" (batched for UNets of at most
            64 channels, the loop for wider ones, where it is the faster; see
            :func:`HyperSORTLib.model.functional.choose_forward`). Both compute the same
            function, so it may change when a run resumes.
        checkpoint_every: write a resumable checkpoint every this many epochs (and at the end).
        num_workers: data-loading worker processes.
    """

    epochs: int = 100
    batch_size: int = 1
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    latent_lr: Optional[float] = None
    latent_betas: tuple[float, float] = (0.7, 0.9)
    latent_init_std: float = 0.05
    latent_scale: str = "row"
    latent_warmup_epochs: int = 0
    l1_weight: float = 0.01
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    include_background: bool = False
    absent_class_volume: float = 0.01
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    forward: str = "auto"
    checkpoint_every: int = 1
    num_workers: int = 0

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", "an integer >= 1", self.epochs)
        _require(self.batch_size >= 1, "train.batch_size", "an integer >= 1", self.batch_size)
        _require(self.lr > 0, "train.lr", "a positive number", self.lr)
        _require(self.latent_lr is None or self.latent_lr > 0, "train.latent_lr", "a positive number or null",
                 self.latent_lr)
        for name in ("betas", "latent_betas"):
            value = getattr(self, name)
            _require(len(value) == 2 and all(0 <= b < 1 for b in value), f"train.{name}",
                     "two numbers in [0, 1)", value)
        for name in ("latent_init_std", "l1_weight", "dice_weight", "ce_weight"):
            _require(getattr(self, name) >= 0, f"train.{name}", "a number >= 0", getattr(self, name))
        _require(0 <= self.absent_class_volume < 1, "train.absent_class_volume", "a fraction in [0, 1)",
                 self.absent_class_volume)
        _require(self.dice_weight + self.ce_weight > 0, "train.dice_weight/ce_weight",
                 "at least one positive segmentation loss weight", (self.dice_weight, self.ce_weight))
        _require(self.checkpoint_every >= 1, "train.checkpoint_every", "an integer >= 1",
                 self.checkpoint_every)
        _require(self.num_workers >= 0, "train.num_workers", "an integer >= 0", self.num_workers)
        _require(0 <= self.latent_warmup_epochs < self.epochs, "train.latent_warmup_epochs",
                 "an integer >= 0 and below train.epochs", self.latent_warmup_epochs)
        _require(self.latent_scale in LATENT_SCALES, "train.latent_scale", " or ".join(map(repr, LATENT_SCALES)),
                 self.latent_scale)
        _require(self.forward in FORWARD_STRATEGIES, "train.forward", " or ".join(map(repr, FORWARD_STRATEGIES)),
                 self.forward)
        device = self.device
        _require(device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()),
                 "train.device", "'auto', 'cpu', 'cuda' or 'cuda:N'", device)


    @property
    def effective_latent_lr(self) -> float:
        """The latent learning rate used: ``latent_lr``, or ``LATENT_TRAVEL / epochs`` capped at
        ``MAX_LATENT_LR`` when it is ``None``."""
        if self.latent_lr is not None:
            return float(self.latent_lr)
        return min(MAX_LATENT_LR, LATENT_TRAVEL / (self.epochs - self.latent_warmup_epochs))


#: Values of ``train.latent_scale`` (see :class:`HyperSORTLib.model.latent.RowwiseAdam`).
LATENT_SCALES = ("row", "table")
#: Values of ``train.forward`` (see :func:`HyperSORTLib.model.functional.choose_forward`).
FORWARD_STRATEGIES = ("auto", "batched", "loop")
#: How the audit merges mixture components into styles, default first (see
#: :class:`HyperSORTLib.analysis.styles.StyleThresholds`).
STYLE_LINKAGES = ("average", "complete")
#: How the audit treats mixture components too small to be a style, default first: "attach" merges
#: the style-sized components first, then each smaller one joins the style of its nearest alike
#: neighbour; "merge" merges every component on the same terms (see
#: :func:`HyperSORTLib.analysis.styles.merge_components`).
STYLE_SMALL_COMPONENTS = ("attach", "merge")
#: What the audit measures two decoded UNets' difference in a class against, default first:
#: "typical", the class's usual volume across the map when both draw it at under half of that
#: (two remnants of a mostly omitted class are alike), else the two volumes; "pair", the two
#: volumes alone (see :func:`HyperSORTLib.analysis.styles.behaviour_distance`).
STYLE_VOLUME_SCALES = ("typical", "pair")
#: How the audit uses the cases' own annotations (each against one UNet of the map, the UNet's size
#: trend removed) besides the decoded UNets, default first: "split", the main mode's members that
#: annotate one class differently the same way, enough to be a style, become a style of their own
#: (:func:`HyperSORTLib.analysis.styles.split_by_annotations`); "members", that, and two parts of the
#: map whose members annotate a class differently are not merged
#: (:func:`HyperSORTLib.analysis.annotations.component_annotation_distance`); "ignore", the decoded
#: UNets alone decide.
STYLE_ANNOTATIONS = ("split", "members", "ignore")
#: Latent units a latent can travel over a run under the default latent learning rate.
LATENT_TRAVEL = 1.2
#: The largest default latent learning rate (runs of fewer than 60 epochs).
MAX_LATENT_LR = 0.05


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        names = self.data.class_names
        _require(not names or len(names) == self.model.unet.num_classes, "data.class_names",
                 f"{self.model.unet.num_classes} names (model.unet.num_classes)", names)
        divisor = self.model.unet.divisor
        _require(all(p % divisor == 0 for p in self.data.patch_size), "data.patch_size",
                 f"multiples of {divisor} (the UNet has {len(self.model.unet.channels)} levels)",
                 self.data.patch_size)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """Build from a nested dictionary, rejecting unknown keys."""
        return from_dict(cls, data)

    @classmethod
    def from_file(cls, path: str | Path) -> "RunConfig":
        """Read a YAML (or JSON) file; errors name the file."""
        path = Path(path)
        data = _read_mapping(path)
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def merged_with_file(self, path: str | Path) -> "RunConfig":
        """This configuration with a YAML file's settings merged over it, section by section: the
        file may name only the keys it changes (e.g. ``train: {epochs: 30}``); errors name the file."""
        path = Path(path)
        update = _read_mapping(path)
        try:
            return self.from_dict(_deep_merge(self.to_dict(), update))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def replace(self, **sections: Any) -> "RunConfig":
        return dataclasses.replace(self, **sections)

    def for_dataset(self, case_list: Any = None, class_names: Sequence[str] | None = None,
                    **train_overrides: Any) -> "RunConfig":
        """This configuration fitted to a dataset: the UNet's class count and ``data.class_names``
        from the case list's classes (background first), plus ``train`` overrides.

        An ``epochs`` override below the configured epochs, without a ``latent_warmup_epochs``
        one, keeps the warm-up's share of the epochs (rounded down), so a shorter run of a
        configuration with a warm-up still trains its latents. A longer one keeps the warm-up as it
        is, so a run resumed with more epochs has the configuration it was trained with.

        Example:
            >>> cfg = RunConfig().for_dataset(class_names=("background", "liver"), epochs=5)
            >>> cfg.model.unet.num_classes, cfg.train.epochs
            (2, 5)
            >>> warm = RunConfig(train=TrainConfig(epochs=60, latent_warmup_epochs=20))
            >>> warm.for_dataset(class_names=("background", "liver"), epochs=9).train.latent_warmup_epochs
            3
        """
        if class_names is None:
            if case_list is None:
                raise ValueError("for_dataset needs a case list or class_names.")
            class_names = case_list.class_names
        names = tuple(class_names)
        overrides = dict(train_overrides)
        warmup = self.train.latent_warmup_epochs
        shorter = "epochs" in overrides and int(overrides["epochs"]) < self.train.epochs
        if shorter and "latent_warmup_epochs" not in overrides and warmup:
            overrides["latent_warmup_epochs"] = warmup * int(overrides["epochs"]) // self.train.epochs
        unet = dataclasses.replace(self.model.unet, num_classes=len(names))
        return dataclasses.replace(self, model=dataclasses.replace(self.model, unet=unet),
                                   data=dataclasses.replace(self.data, class_names=names),
                                   train=dataclasses.replace(self.train, **overrides))


def _read_mapping(path: Path) -> Mapping[str, Any]:
    """The top-level mapping of a YAML (or JSON) configuration file; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read configuration file {path}: {exc.strerror}.") from exc
    import yaml  # local: only needed when reading files

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}.")
    return data


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged over it: nested mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in update.items():
        nested = isinstance(value, Mapping) and isinstance(base.get(key), Mapping)
        out[key] = _deep_merge(base[key], value) if nested else value
    return out


def to_dict(obj: Any) -> Any:
    """Plain-data (JSON-serialisable) view of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, found {value!r}.")
        return from_dict(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, found {value!r}.")
        args = typing.get_args(annotation)
        item_type = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, found {list(value)!r}.")
        return tuple(_convert(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
    if origin in _UNION_ORIGINS:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, found {value!r}.")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, found {value!r}.")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, found {value!r}.")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, found {value!r}.")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``; unknown keys raise :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"Unknown configuration key '{path}'; valid keys here are "
                              f"{', '.join(names)}.{_suggest(str(key), names)}")
        kwargs[key] = _convert(value, hints[key], path)
    return cls(**kwargs)


def config_hash_fields(config: RunConfig) -> dict[str, Any]:
    """The parts of a run's configuration that must not change when a run resumes.

    The number of epochs, the checkpoint interval, the worker count, the device and the forward
    strategy may change between a run and its resumption; everything that shapes the model or
    the optimisation trajectory may not.
    """
    data = config.to_dict()
    for key in ("epochs", "checkpoint_every", "num_workers", "device", "amp", "forward"):
        data["train"].pop(key)
    return json.loads(json.dumps(data))
