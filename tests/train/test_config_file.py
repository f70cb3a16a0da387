"""Config files from Python: a file without a preset describes its whole network."""

from __future__ import annotations

from diffuse.train import spec_from_preset
from diffuse.train.config_file import spec_from_config


def test_a_file_without_a_preset_builds_the_network_it_describes():
    described = spec_from_preset("tiny", "digits", overrides={"train.lr": 0.01}).to_dict()
    described["preset"] = None
    spec = spec_from_config(described)
    assert spec.preset is None and spec.to_dict() == described
    changed = spec_from_config(described, overrides={"model.model_channels": 32})
    assert changed.model.model_channels == 32 and changed.train.lr == 0.01
