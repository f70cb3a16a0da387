"""Which timesteps a training batch uses: uniform, or importance-sampled by loss.

A sampler returns timesteps t and importance weights w = 1 / (T p_t), so that the
weighted loss E_{t ~ p}[w_t L_t] equals the uniform average (1/T) sum_t L_t: the
estimate of L_vlb stays unbiased however the steps are drawn.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


class TimestepSampler:
    """Draws timesteps with probabilities :meth:`probabilities`; the base draws uniformly.

    num_timesteps: T, the number of steps of the training process.
    """

    def __init__(self, num_timesteps: int) -> None:
        self.num_timesteps = int(num_timesteps)

    def probabilities(self) -> np.ndarray:
        """p_t for every t, float64 [T], summing to one."""
        return np.full(self.num_timesteps, 1.0 / self.num_timesteps)

    def sample(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` timesteps; return (t [N] long, weights [N] float32)."""
        probabilities = torch.from_numpy(self.probabilities())
        t = torch.multinomial(probabilities, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * probabilities[t])
        return t.to(device), weights.float().to(device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the per-example losses of a batch; the uniform sampler ignores them."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"a uniform timestep sampler has no state, got {sorted(state)}")


UniformSampler = TimestepSampler  # guided-diffusion's name (resample.py), for ported code


class LossAwareSampler(TimestepSampler):
    """Importance sampling of L_vlb's terms (Improved DDPM section 3.3, eq. 18).

    p_t is proportional to sqrt(E[L_t^2]), estimated from the last ``history`` losses seen
    at each t, and mixed with ``uniform_mass`` of the uniform distribution. Until every t
    has a full history the draw is uniform. In a distributed run every process records
    the losses of all processes, so their samplers stay identical.

    num_timesteps: T.
    history:       losses kept per timestep (10 in the paper).
    uniform_mass:  probability mass spread uniformly over all steps (0.001 in the paper).
    """

    def __init__(self, num_timesteps: int, history: int = 10, uniform_mass: float = 0.001) -> None:
        super().__init__(num_timesteps)
        self.uniform_mass = float(uniform_mass)
        self.losses = np.zeros((self.num_timesteps, history), dtype=np.float64)
        self.counts = np.zeros(self.num_timesteps, dtype=np.int64)

    @property
    def warmed_up(self) -> bool:
        return bool((self.counts == self.losses.shape[1]).all())

    def probabilities(self) -> np.ndarray:
        if not self.warmed_up:
            return super().probabilities()
        weights = np.sqrt(np.mean(self.losses**2, axis=1))
        weights /= weights.sum()
        return weights * (1.0 - self.uniform_mass) + self.uniform_mass / self.num_timesteps

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        t, losses = _gather_across_processes(t.detach(), losses.detach())
        for step, loss in zip(t.tolist(), losses.tolist(), strict=True):
            if self.counts[step] == self.losses.shape[1]:
                self.losses[step, :-1] = self.losses[step, 1:]
                self.losses[step, -1] = loss
            else:
                self.losses[step, self.counts[step]] = loss
                self.counts[step] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "losses": torch.from_numpy(self.losses.copy()),
            "counts": torch.from_numpy(self.counts.copy()),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        losses = state["losses"].double().numpy()
        if losses.shape != self.losses.shape:
            raise ValueError(
                f"sampler state has shape {losses.shape}, expected {self.losses.shape}"
            )
        self.losses = losses.copy()
        self.counts = state["counts"].long().numpy().copy()


def _gather_across_processes(t: torch.Tensor, losses: torch.Tensor):
    """Concatenate (t, losses) of every process, in rank order; a no-op when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t.cpu(), losses.float().cpu()
    device = losses.device
    size = torch.tensor([t.numel()], device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded_t = torch.zeros(longest, dtype=torch.long, device=device)
    padded_losses = torch.zeros(longest, dtype=torch.float32, device=device)
    padded_t[: t.numel()] = t.to(device)
    padded_losses[: t.numel()] = losses.float()
    all_t = [torch.zeros_like(padded_t) for _ in sizes]
    all_losses = [torch.zeros_like(padded_losses) for _ in sizes]
    dist.all_gather(all_t, padded_t)
    dist.all_gather(all_losses, padded_losses)
    keep = [int(s.item()) for s in sizes]
    gathered_t = torch.cat([x[:n] for x, n in zip(all_t, keep, strict=True)])
    gathered_losses = torch.cat([x[:n] for x, n in zip(all_losses, keep, strict=True)])
    return gathered_t.cpu(), gathered_losses.cpu()


def make_timestep_sampler(name: str, num_timesteps: int) -> TimestepSampler:
    """``uniform`` or ``loss-aware`` (the Improved DDPM importance sampler)."""
    if name == "uniform":
        return TimestepSampler(num_timesteps)
    if name == "loss-aware":
        return LossAwareSampler(num_timesteps)
    raise ValueError(f"unknown timestep sampler {name!r}; use 'uniform' or 'loss-aware'")
