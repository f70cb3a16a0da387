"""The upsampler: the U-Net given a low-resolution image, resized and concatenated."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffuse.errors import ConfigError, DataError
from diffuse.nn import SuperResConfig, SuperResUNet, config_from_dict
from helpers.sample_models import RGB_16

SETTINGS = dict(RGB_16, num_classes=4, low_res_size=8)


def randomized_model(**overrides) -> SuperResUNet:
    model = SuperResUNet(SuperResConfig(**{**SETTINGS, **overrides})).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model


def inputs():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 16, generator=generator)
    low = torch.randn(2, 3, 8, 8, generator=generator)
    return x, torch.tensor([10, 900]), torch.tensor([0, 3]), low


def test_output_has_the_high_resolution_shape_and_stem_sees_both_images():
    model = randomized_model()
    assert model.encoder.stem.in_channels == 6 and model.in_channels == 3
    x, t, y, low = inputs()
    with torch.no_grad():
        assert model(x, t, y, low_res=low).shape == (2, 6, 16, 16)


def test_low_res_image_changes_the_output():
    model = randomized_model()
    x, t, y, low = inputs()
    with torch.no_grad():
        assert not torch.allclose(model(x, t, y, low_res=low), model(x, t, y, low_res=-low))


def test_low_res_is_resized_bilinearly_before_concatenation():
    # A low-resolution input given at the upsampled size must give the same output.
    model = randomized_model(low_res_size=None)
    x, t, y, low = inputs()
    upsampled = F.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y, low_res=low), model(x, t, y, low_res=upsampled))


def test_missing_or_misshapen_low_res_is_named():
    model = randomized_model()
    x, t, y, _ = inputs()
    with pytest.raises(ConfigError, match="low_res="):
        model(x, t, y)
    with pytest.raises(DataError, match=r"\[2, 3, 8, 8\]"):
        model(x, t, y, low_res=torch.zeros(2, 3, 4, 4))


def test_config_round_trips():
    config = SuperResConfig(**SETTINGS)
    assert config.to_dict()["kind"] == "superres"
    assert config_from_dict(config.to_dict()) == config
