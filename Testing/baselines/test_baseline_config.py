"""Baseline settings: frozen, validated, unknown keys rejected with the closest valid name."""

from __future__ import annotations

import pytest

from HyperSORTLib.baselines import BaselineConfig, MCPMConfig, PINTConfig
from HyperSORTLib.config import ConfigError


def test_unknown_method_names_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'pint'"):
        BaselineConfig(method="pimt")


@pytest.mark.parametrize("make,where", [(lambda: MCPMConfig(virtual_lr=0), "mcpm.virtual_lr"),
                                        (lambda: MCPMConfig(mask_init_weight=1.0), "mcpm.mask_init_weight"),
                                        (lambda: PINTConfig(ema_decay=1.0), "pint.ema_decay"),
                                        (lambda: PINTConfig(perturbations=0), "pint.perturbations"),
                                        (lambda: PINTConfig(voxel_weight=0, slice_weight=0), "pint.voxel_weight")])
def test_out_of_range_settings_name_the_field(make, where):
    with pytest.raises(ConfigError, match=where):
        make()


def test_yaml_file_with_a_typo_fails_and_the_command_line_method_wins(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("method: unet\npint: {ema_decay: 0.9}\n")
    config = BaselineConfig.from_file(good, method="pint")
    assert config.method == "pint" and config.pint.ema_decay == 0.9
    assert config.record() == {"name": "pint", "decision": "argmax",
                               "settings": {**config.record()["settings"], "ema_decay": 0.9}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("pint: {ema_decya: 0.9}\n")
    with pytest.raises(ConfigError, match="bad.yaml.*ema_decay"):
        BaselineConfig.from_file(bad)


def test_only_ce_threshold_decides_by_the_marginal_threshold():
    assert {m: BaselineConfig(m).decision for m in ("unet", "mcpm", "pint", "ce-threshold")} == {
        "unet": "argmax", "mcpm": "argmax", "pint": "argmax", "ce-threshold": "marginal-threshold"}
