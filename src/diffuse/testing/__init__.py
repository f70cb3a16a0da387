"""Models whose answers are known in closed form, for testing samplers, likelihoods and
guidance without training (like ``numpy.testing``: used by diffuse's own tests, and
available to anyone checking a sampler of their own).

- :class:`GaussianOracle`: the exact denoiser of per-pixel Gaussian data.
- :class:`GaussianMixtureOracle`: the exact class-conditional denoiser and noisy
  classifier of a mixture of Gaussians, one per class.
"""

from diffuse.testing.mixture import GaussianMixtureOracle
from diffuse.testing.oracle import GaussianOracle

__all__ = ["GaussianMixtureOracle", "GaussianOracle"]
