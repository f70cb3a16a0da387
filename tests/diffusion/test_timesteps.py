"""Timestep samplers: uniform and the loss-aware importance sampler of Improved DDPM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffuse.diffusion import LossAwareSampler, TimestepSampler, make_timestep_sampler

T = 50
# Synthetic per-step losses: large near t = 0, as L_vlb's terms are.
LOSS_MEAN = 1.0 / (1.0 + np.arange(T)) + 0.01


def noisy_losses(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noise = 1.0 + 0.5 * torch.rand(t.shape, generator=generator, dtype=torch.float64)
    return torch.from_numpy(LOSS_MEAN)[t] * noise


def warmed_up_sampler(generator) -> LossAwareSampler:
    sampler = LossAwareSampler(T)
    for _ in range(10):
        t = torch.arange(T)
        sampler.update(t, noisy_losses(t, generator))
    return sampler


def test_uniform_sampler_weights_are_one():
    t, w = TimestepSampler(T).sample(1000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() < T and t.dtype == torch.long
    assert torch.equal(w, torch.ones(1000))


def test_loss_aware_sampler_is_uniform_until_every_step_has_its_history():
    generator = torch.Generator().manual_seed(0)
    sampler = LossAwareSampler(T)
    for _ in range(9):
        t = torch.arange(T)
        sampler.update(t, noisy_losses(t, generator))
    sampler.update(torch.arange(T - 1), noisy_losses(torch.arange(T - 1), generator))
    assert not sampler.warmed_up
    np.testing.assert_allclose(sampler.probabilities(), 1.0 / T)
    sampler.update(torch.tensor([T - 1]), torch.tensor([1.0]))
    assert sampler.warmed_up


def test_probabilities_follow_the_root_mean_square_loss():
    generator = torch.Generator().manual_seed(1)
    sampler = warmed_up_sampler(generator)
    rms = np.sqrt((sampler.losses**2).mean(axis=1))
    expected = 0.999 * rms / rms.sum() + 0.001 / T
    np.testing.assert_allclose(sampler.probabilities(), expected, rtol=1e-12)
    # Only the last 10 losses count: pushing 10 more at t = 0 replaces its history.
    for _ in range(10):
        sampler.update(torch.tensor([0]), torch.tensor([7.0]))
    np.testing.assert_allclose(sampler.losses[0], 7.0)


def test_weighted_loss_is_unbiased():
    generator = torch.Generator().manual_seed(2)
    sampler = warmed_up_sampler(generator)
    p = sampler.probabilities()
    assert p.max() / p.min() > 10  # far from uniform, so the weights matter
    # Exactly: sum_t p_t * w_t * L_t = mean_t L_t.
    weights = 1.0 / (T * p)
    assert (p * weights * LOSS_MEAN).sum() == pytest.approx(LOSS_MEAN.mean(), rel=1e-12)
    # And by Monte Carlo through sample().
    t, w = sampler.sample(200_000, generator=generator)
    estimate = w.double() * torch.from_numpy(LOSS_MEAN)[t]
    stderr = estimate.std().item() / np.sqrt(estimate.numel())
    assert abs(estimate.mean().item() - LOSS_MEAN.mean()) < 4 * stderr
    counts = np.bincount(t.numpy(), minlength=T) / t.numel()
    np.testing.assert_allclose(counts, p, atol=4 * np.sqrt(p.max() / t.numel()))


def test_state_round_trip_gives_the_same_draws():
    generator = torch.Generator().manual_seed(3)
    sampler = warmed_up_sampler(generator)
    restored = LossAwareSampler(T)
    restored.load_state_dict(sampler.state_dict())
    np.testing.assert_array_equal(restored.probabilities(), sampler.probabilities())
    a = sampler.sample(64, generator=torch.Generator().manual_seed(9))
    b = restored.sample(64, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="shape"):
        LossAwareSampler(T + 1).load_state_dict(sampler.state_dict())


def test_factory():
    assert type(make_timestep_sampler("uniform", 10)) is TimestepSampler
    assert isinstance(make_timestep_sampler("loss-aware", 10), LossAwareSampler)
    with pytest.raises(ValueError, match="unknown timestep sampler"):
        make_timestep_sampler("greedy", 10)


def _distributed_worker(rank: int, world_size: int, store_path: str, results) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.FileStore(store_path, world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size)
    sampler = LossAwareSampler(8, history=2)
    for step in range(3):
        # Each process sees different steps and a different number of them.
        t = torch.arange(rank, 8, 2)[: 4 - rank]
        sampler.update(t, torch.full(t.shape, float(10 * rank + step + 1)))
    results[rank] = sampler.state_dict()["losses"].numpy().tolist()
    dist.destroy_process_group()


def test_distributed_processes_keep_identical_samplers(tmp_path):
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "store"), results), nprocs=2)
    assert results[0] == results[1]
    losses = np.array(results[0])
    assert losses[0].tolist() == [2.0, 3.0] and losses[1].tolist() == [12.0, 13.0]
