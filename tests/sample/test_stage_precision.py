"""A stage's precision: "auto" decides for sampling (fp32 without bf16 instructions, the
faster of the two timed once per machine and cached otherwise), an explicit precision is
used as given, and classifier-free guidance stays one batched network pass per step in
every sampler and precision."""

from __future__ import annotations

import pytest
import torch

from diffuse import autoprecision
from diffuse.errors import ConfigError
from diffuse.sample import SamplerSettings, Stage, generate
from helpers.cpus import EPYC, fake_cpu, timings_favouring
from helpers.sample_models import DIFFUSION, base_unet


def stage(**options) -> Stage:
    return Stage(base_unet(), DIFFUSION, SamplerSettings("ddim", "3"), **options)


@pytest.fixture
def timings(monkeypatch) -> list[dict]:
    """bf16 reads as twice as fast; the real workload still runs (once per candidate), and
    each timing is recorded."""
    timed = []
    monkeypatch.setattr(autoprecision, "time_precisions", timings_favouring("bf16", timed))
    return timed


def test_auto_is_the_default_and_fp32_without_bf16_instructions(timings):
    # conftest's CPU has no bf16 instructions
    decision = stage().decide_precision(4)
    assert decision.precision == "fp32" and timings == []
    assert (
        decision.message()
        == "precision auto -> fp32 (no bf16 instructions on CPU of the test suite)"
    )
    assert not autoprecision.cache_path().exists()
    assert stage().with_precision_for(4).precision == "fp32"


def test_auto_times_one_network_step_once_per_batch_and_guidance(tmp_path, monkeypatch, timings):
    fake_cpu(tmp_path, monkeypatch, "avx512f avx512_bf16")
    first = stage().decide_precision(4)
    assert first.precision == "bf16" and len(timings) == 1
    assert first.reason.startswith(f"measured on {EPYC}, batch 4:")
    again = stage().decide_precision(4)
    assert again.precision == "bf16" and "measured earlier" in again.reason and len(timings) == 1
    # Guidance doubles the rows the network sees: another workload, timed anew.
    assert "batch 8" in stage(cfg=1.0).decide_precision(4).reason and len(timings) == 2
    assert stage(cfg=1.0).decide_precision(4).reason.startswith("measured earlier")
    # The cache is per workload kind: sampling's entries do not answer for training's.
    cpu = autoprecision.cpu_info()
    network = base_unet().config.to_dict()
    entries = autoprecision.read_cache()
    assert autoprecision.cache_key(autoprecision.cpu_machine(cpu), network, 4, "sample") in entries
    assert (
        autoprecision.cache_key(autoprecision.cpu_machine(cpu), network, 4, "train") not in entries
    )


def test_an_explicit_precision_is_used_as_given(tmp_path, monkeypatch, timings):
    fake_cpu(tmp_path, monkeypatch, "avx512_bf16")
    for precision in ("fp32", "bf16"):
        decision = stage(precision=precision).decide_precision(4)
        assert (decision.precision, decision.reason) == (precision, "requested")
    assert timings == [] and not autoprecision.cache_path().exists()


def test_auto_choosing_bf16_samples_exactly_as_explicit_bf16(tmp_path, monkeypatch, timings):
    fake_cpu(tmp_path, monkeypatch, "avx512_bf16")
    auto = generate(stage(), 3, seed=2, batch_size=2)  # decided once, for full batches
    assert len(timings) == 1
    bf16 = generate(stage(precision="bf16"), 3, seed=2, batch_size=2)
    fp32 = generate(stage(precision="fp32"), 3, seed=2, batch_size=2)
    # The same kernels on the same inputs: equal, but a level of slack keeps the test
    # independent of kernel determinism. bf16 really ran: its 8-bit mantissa moves some
    # pixels by more than that.
    assert abs(auto.images.astype(int) - bf16.images).max() <= 1
    assert abs(bf16.images.astype(int) - fp32.images).max() > 1


def largest_convolution(network: torch.nn.Module) -> torch.Tensor:
    return max((p for p in network.parameters() if p.dim() == 4), key=torch.numel)


def test_auto_choosing_nchw_weights_moves_the_network_and_samples_in_bf16(tmp_path, monkeypatch):
    fake_cpu(tmp_path, monkeypatch, "avx512_bf16")
    monkeypatch.setattr(autoprecision, "time_precisions", timings_favouring("bf16-nchw"))
    auto = stage()
    weight = largest_convolution(auto.model)
    assert not weight.is_contiguous()  # built channels_last
    decision = auto.decide_precision(2)
    assert (decision.precision, decision.memory_format) == ("bf16", "contiguous_format")
    assert largest_convolution(auto.model).is_contiguous()  # moved in place by the decision
    images = generate(auto, 3, seed=2, batch_size=2).images.astype(int)
    fp32 = generate(stage(precision="fp32"), 3, seed=2, batch_size=2).images
    # bf16's rounding moves pixels by a few levels at most, whichever the weights' layout
    assert 0 < abs(images - fp32).max() <= 8
    explicit = stage(precision="bf16")
    explicit.decide_precision(2)
    assert not largest_convolution(explicit.model).is_contiguous()  # explicit: left as built


def test_bad_precisions_are_refused_when_the_stage_is_made():
    with pytest.raises(ConfigError, match="unknown precision 'fp8'; choose one of auto, fp32"):
        stage(precision="fp8")
    with pytest.raises(ConfigError, match="fp16 autocast is for CUDA devices"):
        stage(precision="fp16")


class CountingNetwork(torch.nn.Module):
    """The network, recording the rows and labels of every forward pass."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.calls: list[list[int]] = []

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.network, name)

    def forward(self, x, t, y=None):
        self.calls.append(y.tolist())
        return self.network(x, t, y=y)


@pytest.mark.parametrize(
    ("sampler", "precision"), [("ddpm", "fp32"), ("ddim", "bf16"), ("dpm++2m", "fp32")]
)
def test_guidance_is_one_batched_network_pass_per_step(sampler, precision):
    network = CountingNetwork(base_unet())
    guided = Stage(network, DIFFUSION, SamplerSettings(sampler, "4"), cfg=2.0, precision=precision)
    generate(guided, 3, seed=0, classes=[1, 2, 3])
    null = network.null_class
    assert network.calls == [[1, 2, 3, null, null, null]] * 4  # 4 steps, cond + uncond each
