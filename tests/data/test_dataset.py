"""ImageDataset: random flips and use with a torch DataLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffuse.data import ImageDataset, load_dataset, random_flip


def test_flips_are_mirrors_drawn_from_the_given_generator_only():
    pixels = np.random.default_rng(6).integers(0, 256, (400, 4, 4, 1), dtype=np.uint8)
    data = ImageDataset.from_arrays(pixels, np.zeros(400, np.int64), random_flip=True)
    plain, _ = ImageDataset.from_arrays(pixels).tensors()
    state = torch.get_rng_state()
    first, _ = data.batch(range(400), torch.Generator().manual_seed(9))
    again, _ = data.batch(range(400), torch.Generator().manual_seed(9))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again)
    flipped = (first == plain.flip(-1)).flatten(1).all(1)
    kept = (first == plain).flatten(1).all(1)
    assert (flipped | kept).all()
    assert 150 < int(flipped.sum()) < 250  # Binomial(400, 1/2): 200 +- 5 sd
    x0, _ = data.get(0, torch.Generator().manual_seed(9))
    assert torch.equal(x0, first[0])
    assert torch.equal(random_flip(plain[:1], torch.Generator().manual_seed(9)), first[:1])


def test_dataset_works_with_a_torch_dataloader():
    data = load_dataset("digits", split="test", random_flip=True)
    loader = torch.utils.data.DataLoader(data, batch_size=7, shuffle=False)
    x, y = next(iter(loader))
    assert x.shape == (7, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    with pytest.raises(IndexError):
        data[len(data)]
