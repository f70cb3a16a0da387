"""The noisy classifier: the U-Net's encoder with a pooling head."""

from __future__ import annotations

import pytest
import torch

from diffuse.errors import DataError
from diffuse.nn import ClassifierConfig, EncoderClassifier, UNet, UNetConfig, config_from_dict
from helpers.sample_models import RGB_16

SETTINGS = dict(RGB_16, out_channels=5, num_head_channels=8, resample="resblock")


def inputs(n: int = 3):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 16, 16, generator=generator), torch.tensor([0, 500, 999][:n])


@pytest.mark.parametrize("pool", ["attention", "adaptive"])
def test_logits_have_one_row_per_image(pool):
    classifier = EncoderClassifier(ClassifierConfig(**SETTINGS, pool=pool)).eval()
    assert classifier.num_classes == 5
    with torch.no_grad():
        logits = classifier(*inputs())
    assert logits.shape == (3, 5)


def test_gradient_with_respect_to_the_noisy_image_exists():
    # Classifier guidance (ADM algorithm 1) needs d log p(y | x_t) / d x_t.
    classifier = EncoderClassifier(ClassifierConfig(**SETTINGS)).eval()
    x, t = inputs()
    x.requires_grad_(True)
    log_probs = torch.log_softmax(classifier(x, t), dim=-1)
    (grad,) = torch.autograd.grad(log_probs[:, 1].sum(), x)
    assert grad.shape == x.shape
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(grad[i].abs().sum() > 0 for i in range(3))


def test_timestep_changes_the_logits():
    classifier = EncoderClassifier(ClassifierConfig(**SETTINGS)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # fresh residual branches are zero: nothing depends on t yet
        for parameter in classifier.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    x, t = inputs()
    with torch.no_grad():
        assert not torch.allclose(classifier(x, t), classifier(x, t + 1))


def test_encoder_is_the_unet_encoder():
    # Same settings, same encoder: the classifier reuses the U-Net's encoder weights.
    classifier = EncoderClassifier(ClassifierConfig(**SETTINGS))
    unet = UNet(UNetConfig(**SETTINGS))
    encoder_shapes = {k: v.shape for k, v in classifier.encoder.state_dict().items()}
    assert encoder_shapes == {k: v.shape for k, v in unet.encoder.state_dict().items()}


def test_wrong_image_size_is_named():
    classifier = EncoderClassifier(ClassifierConfig(**SETTINGS))
    with pytest.raises(DataError, match="16x16"):
        classifier(torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long))


def test_config_round_trips():
    config = ClassifierConfig(**SETTINGS, pool="adaptive")
    assert config_from_dict(config.to_dict()) == config
    assert config.to_dict()["kind"] == "classifier"
