"""A preset fitted to named data sets: the usual ways to a preset's size are kept (28 -> 32
by padding, 28 -> 14 by a whole factor), smaller images shrink the network, and how the
images reach the network is said in words."""

from __future__ import annotations

import pytest

from diffuse.data.resizing import describe_fit
from diffuse.data.survey import survey_data
from diffuse.train import spec_from_preset
from diffuse.train.autoconfig import fitting_notes


@pytest.mark.parametrize(
    ("preset", "data", "size"),
    [
        ("ddpm-cifar10", "fashion-mnist", 32),  # padded 28 -> 32, as the papers do
        ("fashion-14", "fashion-mnist", 14),  # the two-stage pipeline's base: 2x2 means
        ("tiny", "cifar10", 8),  # larger images are shrunk to the preset's size
        ("fashion", "digits", 8),  # smaller ones shrink the network instead
    ],
)
def test_the_image_size_a_preset_trains_at_on_a_named_set(preset, data, size):
    assert spec_from_preset(preset, data).model.image_size == size


def test_the_channels_and_their_output_follow_the_data():
    spec = spec_from_preset("iddpm-cifar10", "fashion-mnist")  # learned variance: 2 x 3 out
    assert (spec.model.in_channels, spec.model.out_channels) == (1, 2)
    spec = spec_from_preset("tiny", "cifar10")
    assert (spec.model.in_channels, spec.model.out_channels) == (3, 3)


def test_named_sets_say_how_they_reach_the_network():
    fashion = survey_data("fashion-mnist")
    assert fitting_notes(fashion, 32) == [
        "fashion-mnist's 28x28 images are padded with black to 32x32"
    ]
    assert fitting_notes(fashion, 14) == ["fashion-mnist's 28x28 images are shrunk to 14x14"]
    assert fitting_notes(fashion, 28) == []


@pytest.mark.parametrize(
    ("width", "height", "size", "words"),
    [
        (16, 20, 8, "centre-cropped to 16x16 and shrunk to 8x8"),
        (20, 16, 16, "centre-cropped to 16x16"),
        (30, 30, 8, "shrunk to 8x8"),
        (4, 6, 8, "centre-cropped to 4x4 and enlarged to 8x8"),
        (8, 8, 8, None),
    ],
)
def test_a_fit_in_words(width, height, size, words):
    assert describe_fit(width, height, size) == words
