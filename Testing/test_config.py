"""Configuration loading: strict keys, types and cross-field checks, with messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from HyperSORTLib.config import ConfigError, RunConfig

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_reference_faithful_differs_from_the_defaults_only_in_the_latent_budget():
    faithful = RunConfig.from_file(CONFIGS / "reference_faithful.yaml")
    defaults = RunConfig()
    assert faithful.model == defaults.model and faithful.data == defaults.data
    train, default = vars(faithful.train), vars(defaults.train)
    changed = {k for k in default if train[k] != default[k]}
    assert changed == {"epochs", "latent_lr", "l1_weight", "absent_class_volume"}
    assert (faithful.train.latent_lr, faithful.train.l1_weight, faithful.train.absent_class_volume) == (1e-3, 1.0, 0.0)


def test_an_epochs_override_keeps_the_warm_ups_share_of_the_epochs():
    from HyperSORTLib.config import TrainConfig

    warm = RunConfig(train=TrainConfig(epochs=60, latent_warmup_epochs=20))
    names = ("background", "liver")
    assert warm.for_dataset(class_names=names, epochs=30).train.latent_warmup_epochs == 10
    assert warm.for_dataset(class_names=names, epochs=1).train.latent_warmup_epochs == 0  # a one-epoch check runs
    # more epochs (a run resumed to train longer) keep the warm-up it was trained with
    assert warm.for_dataset(class_names=names, epochs=120).train.latent_warmup_epochs == 20
    # an explicit warm-up is kept as given, and a configuration without one gets none
    assert warm.for_dataset(class_names=names, epochs=30, latent_warmup_epochs=5).train.latent_warmup_epochs == 5
    assert RunConfig().for_dataset(class_names=names, epochs=3).train.latent_warmup_epochs == 0
    with pytest.raises(ValueError, match="latent_warmup_epochs"):
        warm.for_dataset(class_names=names, epochs=30, latent_warmup_epochs=30)


def test_the_default_latent_learning_rate_follows_the_epoch_budget():
    from HyperSORTLib.config import LATENT_TRAVEL, MAX_LATENT_LR, TrainConfig

    assert TrainConfig(epochs=100).effective_latent_lr == pytest.approx(LATENT_TRAVEL / 100)
    assert TrainConfig(epochs=1200).effective_latent_lr == pytest.approx(1e-3)
    assert TrainConfig(epochs=10).effective_latent_lr == MAX_LATENT_LR
    assert TrainConfig(epochs=10, latent_lr=2e-3).effective_latent_lr == 2e-3
    # The latents travel over the epochs in which they learn, after the generator's warm-up.
    assert TrainConfig(epochs=100, latent_warmup_epochs=40).effective_latent_lr == pytest.approx(LATENT_TRAVEL / 60)
    with pytest.raises(ValueError, match="latent_warmup_epochs"):
        TrainConfig(epochs=10, latent_warmup_epochs=10)
    with pytest.raises(ValueError, match="latent_scale"):
        TrainConfig(latent_scale="column")
    # The paper configurations use the rule; none of them pins the slow released latents.
    for name in ("amos.yaml", "totalsegmentator.yaml", "cpu_small.yaml"):
        train = RunConfig.from_file(CONFIGS / name).train
        assert train.latent_lr is None and train.l1_weight == 0.01, name


def test_bundled_configs_load():
    small = RunConfig.from_file(CONFIGS / "cpu_small.yaml")
    assert small.model.unet.channels == (8, 16, 32, 64) and small.data.patch_size == (64, 64, 64)


def test_round_trip_through_dict():
    cfg = RunConfig.from_dict({"train": {"epochs": 7, "betas": [0.8, 0.99]}, "data": {"spacing": None}})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.train.betas == (0.8, 0.99) and cfg.data.spacing is None


@pytest.mark.parametrize("data,message", [
    ({"train": {"epoch": 3}}, "Unknown configuration key 'train.epoch'.*Did you mean 'epochs'"),
    ({"modle": {}}, "Unknown configuration key 'modle'.*Did you mean 'model'"),
    ({"train": {"epochs": "ten"}}, "train.epochs: expected an integer, found 'ten'"),
    ({"train": {"epochs": 0}}, "train.epochs: expected an integer >= 1, found 0"),
    ({"train": {"lr": -1}}, "train.lr: expected a positive number"),
    ({"train": {"betas": [0.9]}}, "train.betas: expected 2 values"),
    ({"train": {"device": "gpu"}}, "train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'gpu'"),
    ({"train": {"amp": "yes"}}, "train.amp: expected true or false"),
    ({"data": {"intensity": "zscore"}}, "data.intensity: expected 'percentile' or 'window'"),
    ({"data": {"patch_size": [100, 100, 100]}}, "data.patch_size: expected multiples of 8"),
    ({"data": {"class_names": ["bg", "liver", "spleen"]}}, "data.class_names: expected 2 names"),
    ({"model": {"unet": {"channels": []}}}, "model.unet.channels"),
    ({"model": "big"}, "model: expected a mapping"),
])
def test_bad_configuration_is_named(data, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(data)


def test_bad_file_is_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        RunConfig.from_file(path)
    path.write_text("train:\n  epocs: 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: Unknown configuration key 'train.epocs'"):
        RunConfig.from_file(path)
    with pytest.raises(ConfigError, match="Cannot read configuration file"):
        RunConfig.from_file(tmp_path / "missing.yaml")


def test_a_file_merged_over_a_configuration_changes_only_the_keys_it_names(tmp_path):
    base = RunConfig.from_file(CONFIGS / "cpu_small.yaml")
    path = tmp_path / "zoom.yaml"
    path.write_text("data:\n  scale_augmentation: 0.15\ntrain:\n  epochs: 7\n")
    merged = base.merged_with_file(path)
    assert merged.data.scale_augmentation == 0.15 and merged.train.epochs == 7
    # every other key, nested ones included, is the base's
    assert merged.replace(data=base.data, train=base.train) == base
    path.write_text("train:\n  epocs: 2\n")
    with pytest.raises(ConfigError, match=r"zoom.yaml: Unknown configuration key 'train.epocs'"):
        base.merged_with_file(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="zoom.yaml: expected a mapping at the top level"):
        base.merged_with_file(path)


def test_for_dataset_sets_classes_and_training_overrides():
    from HyperSORTLib.data.cases import CaseList

    cases = CaseList(cases=(), class_names=("background", "liver", "spleen", "kidney"), root=Path("."))
    config = RunConfig().for_dataset(cases, epochs=7, device="cpu")
    assert config.model.unet.num_classes == 4 and config.data.class_names == cases.class_names
    assert (config.train.epochs, config.train.device) == (7, "cpu")
    assert config.model.hyper == RunConfig().model.hyper  # everything else kept
    with pytest.raises(ValueError, match="case list or class_names"):
        RunConfig().for_dataset()
