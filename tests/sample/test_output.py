"""A sample folder interrupted at any moment keeps what it made in a form `diffuse eval`
reads."""

from __future__ import annotations

import numpy as np
import pytest

import diffuse.sample.output as output
from diffuse.eval.samples import load_samples
from diffuse.sample.output import SamplesInterrupted, write_samples
from diffuse.sample.pipeline import Samples


def test_a_signal_while_the_array_file_is_written_keeps_the_images_readable(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    batches = [
        Samples(rng.integers(0, 256, (2, 8, 8, 1), dtype=np.uint8), np.array([k, k]))
        for k in range(2)
    ]

    def interrupted_savez(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(output.np, "savez", interrupted_savez)
    with pytest.raises(SamplesInterrupted) as stopped:
        write_samples(tmp_path / "out", batches, requested=4)
    partial = stopped.value.folder
    assert partial == tmp_path / "out.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["images", "info.json"]
    monkeypatch.undo()
    images = load_samples(partial)
    np.testing.assert_array_equal(images, np.concatenate([b.images for b in batches])[..., 0])
