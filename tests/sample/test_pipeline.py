"""Generation stages and the two-stage pipeline: reproducibility per sample, upsampling,
and every request that cannot be served refused before any sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffuse.diffusion import (
    DiffusionConfig,
    GaussianDiffusion,
    beta_schedule,
    ddpm_sample,
    seeded_generators,
    space_timesteps,
)
from diffuse.errors import ConfigError
from diffuse.rendering import to_uint8
from diffuse.sample import SamplerSettings, Stage, generate, generate_batches, quantize
from diffuse.sample.pipeline import check_request, join_samples, sample_labels
from diffuse.testing.mixture import GaussianMixtureOracle
from helpers.sample_models import DIFFUSION, base_unet, classifier, upsampler

DDPM5 = SamplerSettings("ddpm", "5")


@pytest.fixture(scope="module")
def base():
    return Stage(
        base_unet(), DIFFUSION, DDPM5, cfg=1.0, classifier=classifier(), classifier_scale=2.0
    )


@pytest.fixture(scope="module")
def up():
    return Stage(upsampler(), DIFFUSION, SamplerSettings("ddim", "3", eta=0.5))


def test_sample_i_is_the_same_whatever_the_batch_size_and_seed_offset(base, up):
    whole = generate(base, 5, seed=7, batch_size=5, upsampler=up)
    pieces = generate(base, 5, seed=7, batch_size=2, upsampler=up)
    tail = generate(base, 2, seed=10, batch_size=2, upsampler=up)
    assert whole.images.shape == (5, 16, 16, 1) and whole.images.dtype == np.uint8
    assert np.abs(whole.images.astype(int) - pieces.images).max() <= 1  # CPU kernels per batch
    np.testing.assert_array_equal(whole.labels, pieces.labels)
    np.testing.assert_array_equal(tail.labels, whole.labels[3:])
    assert np.abs(tail.images.astype(int) - whole.images[3:]).max() <= 1
    assert len(set(whole.images.reshape(5, -1).sum(1).tolist())) == 5  # all different


def test_batches_come_one_by_one_and_join_to_the_samples_of_generate(base):
    batches = generate_batches(base, 5, seed=3, classes=[2, 4], batch_size=2)
    first = next(batches)
    assert first.images.shape == (2, 8, 8, 1) and first.labels.tolist() == [2, 4]
    rest = list(batches)
    assert [len(batch.images) for batch in rest] == [2, 1]
    joined = join_samples([first, *rest])
    whole = generate(base, 5, seed=3, classes=[2, 4], batch_size=2)
    np.testing.assert_array_equal(joined.images, whole.images)  # the same batches, same run
    np.testing.assert_array_equal(joined.labels, whole.labels)
    with pytest.raises(ConfigError, match="batch size"):
        next(generate_batches(base, 5, batch_size=0))


def test_per_sample_generators_make_the_samplers_batch_independent_exactly():
    full = GaussianDiffusion(beta_schedule("cosine", 1000))
    mixture = GaussianMixtureOracle(full, torch.tensor([-0.5, 0.5]), 0.3)
    process = full.respace(range(0, 1000, 100))

    def run(seeds):
        generators = seeded_generators(seeds)
        x_T = torch.stack([torch.randn(1, 2, 2, generator=g) for g in generators])
        return ddpm_sample(mixture, process, x_T, generator=generators)

    together = run(range(6))
    apart = torch.cat([run(range(0, 4)), run(range(4, 6))])
    torch.testing.assert_close(together, apart, rtol=0, atol=0)


def test_the_upsampler_is_conditioned_on_the_rounded_base_samples(base, up):
    samples = generate(base, 3, seed=0, classes=[4, 2], upsampler=up)
    generators = seeded_generators(range(3))
    labels = torch.tensor([4, 2, 4])
    low = base.sample(generators, labels)
    expected = up.sample(generators, labels, low_res=quantize(low))
    np.testing.assert_array_equal(samples.labels, [4, 2, 4])
    assert np.abs(samples.images.astype(int) - to_uint8(expected)).max() <= 1


def test_quantize_rounds_to_the_8_bit_levels():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.3, 1.0])
    levels = (quantize(x) + 1) * 127.5
    torch.testing.assert_close(levels, torch.tensor([0.0, 0.0, 128.0, 166.0, 255.0]))


def test_random_labels_come_from_each_samples_generator(base):
    labels = sample_labels(base, seeded_generators([5, 6, 7]), 0, None)
    again = sample_labels(base, seeded_generators([6, 7]), 1, None)
    assert labels.tolist()[1:] == again.tolist()
    assert sample_labels(base, seeded_generators([0, 1, 2]), 4, [1, 2, 3]).tolist() == [2, 3, 1]


def model_kwargs_of(**changes):
    return dict(model=base_unet(), diffusion=DIFFUSION, sampler=DDPM5) | changes


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(model=classifier()), "is a noisy classifier"),
        (dict(cfg=1.0, model=base_unet(null_class=False)), "without the null class|has none"),
        (dict(cfg=1.0, model=base_unet(num_classes=None, null_class=False)), "unconditional"),
        (dict(classifier=classifier(image_size=16)), "16x16 images but the model makes .* 8x8"),
        (dict(classifier=classifier(classes=5)), "5 classes and the model 10"),
        (dict(classifier=base_unet()), "not a noisy classifier"),
        (dict(cfg_interval=(0.1, 1.0)), "needs classifier-free guidance"),
        (dict(cfg=1.0, cfg_interval=(900.0, 1000.0)), "no timestep"),
        (dict(cfg=float("nan")), "finite"),
        (
            dict(diffusion=DiffusionConfig("cosine", 1000, "eps", "learned_range", "hybrid")),
            "2 output channels",
        ),
        (dict(sampler=SamplerSettings("ddim", "ddim999")), "no constant stride"),
    ],
)
def test_stage_refuses_requests_it_cannot_serve(changes, message):
    with pytest.raises(ConfigError, match=message):
        Stage(**model_kwargs_of(**changes))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(name="euler"), "unknown sampler 'euler'"),
        (dict(name="ddpm", eta=0.5), "eta is DDIM's"),
        (dict(eta=-1.0), "eta must be"),
    ],
)
def test_sampler_settings_are_checked(settings, message):
    with pytest.raises(ConfigError, match=message):
        SamplerSettings(**settings)


def test_dpm_solver_reads_a_bare_step_count_as_quadratic_spacing():
    """DPM-Solver++ overshoots on evenly spaced steps (README, "Which sampler"): a bare
    count means quadN for it, and only for it; any explicit spacing is taken as written."""
    for name, steps, walked in [
        ("dpm++2m", "10", "quad10"),
        ("dpm++2m", 10, "quad10"),
        ("dpm++2m", "even10", "even10"),
        ("dpm++2m", "ddim10", "ddim10"),
        ("dpm++2m", "3,7", "3,7"),
        ("dpm++2m", "1", "1"),  # one step is one step, however spaced
        ("ddim", "10", "10"),
        ("ddpm", 10, "10"),
    ]:
        assert SamplerSettings(name, steps).respacing == walked, (name, steps)
    stage = Stage(base_unet(), DIFFUSION, SamplerSettings("dpm++2m", "10"))
    assert stage.process.timestep_map.tolist() == space_timesteps(1000, "quad10")


def test_requests_are_checked_before_sampling(base, up):
    unconditional = Stage(base_unet(num_classes=None, null_class=False), DIFFUSION, DDPM5)
    cases = [
        (dict(stage=base, n=0), "positive integer"),
        (dict(stage=base, n=2, batch_size=0), "batch size"),
        (dict(stage=base, n=2, classes=[3, 10]), r"classes \[10\] are out of range"),
        (dict(stage=base, n=2, classes=[]), "empty"),
        (dict(stage=unconditional, n=2, classes=[1]), "unconditional and no classifier"),
        (dict(stage=up, n=2), "base model is an upsampler"),
        (dict(stage=base, n=2, upsampler=base), "not an upsampler"),
        (dict(stage=unconditional, n=2, upsampler=up), "no classes to pass on"),
        (
            dict(stage=base, n=2, upsampler=Stage(upsampler(low_res_size=4), DIFFUSION, DDPM5)),
            "takes 4x4 images but the base model makes 8x8",
        ),
        (
            dict(stage=base, n=2, upsampler=Stage(upsampler(num_classes=5), DIFFUSION, DDPM5)),
            "knows 5 classes",
        ),
    ]
    for request, message in cases:
        stage = request.pop("stage")
        with pytest.raises(ConfigError, match=message):
            check_request(stage, **request)


def test_a_start_step_skips_the_first_steps_of_the_reverse_process():
    """Improved DDPM Fig. 4: sampling from pure noise at an earlier index of the chain."""
    stage = Stage(base_unet(), DIFFUSION, SamplerSettings("ddim", "5"))
    skipped = generate(stage, 3, seed=4, classes=[1], start_step=2)
    generators = seeded_generators(range(4, 7))
    labels = sample_labels(stage, generators, 0, [1])
    by_hand = stage.sample(generators, labels, start_step=2)  # x at index 2 is pure noise
    np.testing.assert_array_equal(skipped.images, to_uint8(by_hand))
    full = generate(stage, 3, seed=4, classes=[1])
    np.testing.assert_array_equal(
        generate(stage, 3, seed=4, classes=[1], start_step=4).images, full.images
    )
    assert not np.array_equal(skipped.images, full.images)
    for bad in (-1, 5, 2.0):
        with pytest.raises(ConfigError, match=r"start step must be an index of the 5 steps"):
            generate(stage, 1, start_step=bad)
