"""load_dataset by name: unknown names and bad options refused with the valid ones."""

from __future__ import annotations

import pytest

from diffuse.data import load_dataset
from diffuse.errors import ConfigError


def test_unknown_name_lists_the_known_names():
    with pytest.raises(ConfigError, match="digits, fashion-mnist, mnist, cifar10"):
        load_dataset("imagenet")


@pytest.mark.parametrize(
    "options", [{"split": "valid"}, {"image_size": 0}, {"image_size": 2.5}, {"image_size": True}]
)
def test_bad_options_are_refused(options):
    with pytest.raises(ConfigError):
        load_dataset("digits", **options)
