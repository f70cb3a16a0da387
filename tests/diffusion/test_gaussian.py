"""The Gaussian process's formulas against closed forms and independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from diffuse.diffusion import DiffusionConfig, GaussianDiffusion, beta_schedule, ddpm_sample
from diffuse.diffusion.distributions import discretized_gaussian_log_likelihood, normal_kl
from diffuse.errors import ConfigError
from diffuse.testing.oracle import GaussianOracle

F64 = torch.float64


def process(schedule="linear", T=1000, **kwargs):
    return GaussianDiffusion(beta_schedule(schedule, T), **kwargs)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("index", [1, 10, 500, 999])
def test_q_posterior_is_bayes_rule_on_a_grid(schedule, index):
    p = process(schedule)
    x0, x_t = 0.37, -0.52
    beta = p.betas[index]
    abar_prev = p.alphas_cumprod[index - 1]
    # q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0), evaluated on a fine grid.
    grid = np.linspace(-6, 6, 400_001)
    log_density = stats.norm.logpdf(
        x_t, np.sqrt(1 - beta) * grid, np.sqrt(beta)
    ) + stats.norm.logpdf(grid, np.sqrt(abar_prev) * x0, np.sqrt(1 - abar_prev))
    weights = np.exp(log_density - log_density.max())
    weights /= weights.sum()
    grid_mean = (weights * grid).sum()
    grid_var = (weights * (grid - grid_mean) ** 2).sum()
    t = torch.tensor([index])
    mean, var, log_var = p.q_posterior(
        torch.full((1, 1), x0, dtype=F64), torch.full((1, 1), x_t, dtype=F64), t
    )
    assert mean.item() == pytest.approx(grid_mean, abs=1e-6)
    assert var.item() == pytest.approx(grid_var, rel=1e-4)
    assert log_var.item() == pytest.approx(np.log(grid_var), abs=1e-4)


def test_gaussian_kl_matches_monte_carlo():
    generator = torch.Generator().manual_seed(0)
    m1, lv1, m2, lv2 = 0.3, -1.2, -0.4, 0.5
    x = m1 + np.exp(0.5 * lv1) * torch.randn(2_000_000, generator=generator, dtype=F64)
    log_p1 = torch.distributions.Normal(m1, np.exp(0.5 * lv1)).log_prob(x)
    log_p2 = torch.distributions.Normal(m2, np.exp(0.5 * lv2)).log_prob(x)
    estimate = (log_p1 - log_p2).mean().item()
    stderr = (log_p1 - log_p2).std().item() / np.sqrt(x.numel())
    exact = normal_kl(*(torch.tensor(v, dtype=F64) for v in (m1, lv1, m2, lv2))).item()
    assert abs(estimate - exact) < 4 * stderr


@pytest.mark.parametrize(("mean", "scale"), [(0.0, 0.01), (0.5, 0.2), (-0.99, 0.003), (0.2, 3.0)])
def test_decoder_bins_are_a_distribution_matching_the_normal_cdf(mean, scale):
    levels = torch.linspace(-1, 1, 256, dtype=F64)
    log_p = discretized_gaussian_log_likelihood(
        levels, torch.full_like(levels, mean), torch.full_like(levels, np.log(scale))
    )
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    edges = np.concatenate([[-np.inf], (levels[:-1].numpy() + 1 / 255), [np.inf]])
    expected = np.diff(stats.norm.cdf(edges, mean, scale))
    mask = expected > 1e-12
    np.testing.assert_allclose(log_p.exp().numpy()[mask], expected[mask], rtol=1e-6, atol=1e-12)


def independent_abar(p: GaussianDiffusion) -> np.ndarray:
    """abar_t = prod_{s<=t} (1 - beta_s), summed in log space (not the process's cumprod)."""
    return np.exp(np.cumsum(np.log1p(-p.betas)))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_alpha_sigma_are_the_scales_of_q_xt_given_x0(schedule):
    p = process(schedule)
    t = torch.tensor([0, 1, 500, 999])
    like = torch.zeros(4, 3, 2, 2, dtype=F64)
    alpha, sigma = p.alpha_sigma(t, like)
    assert alpha.shape == sigma.shape == (4, 1, 1, 1)
    abar = independent_abar(p)[t.numpy()]
    # DDPM eq. 4: alpha = sqrt(abar), sigma = sqrt(1 - abar); float64 roundoff only.
    np.testing.assert_allclose(alpha.flatten().numpy(), np.sqrt(abar), rtol=1e-12)
    np.testing.assert_allclose(sigma.flatten().numpy(), np.sqrt(1 - abar), rtol=1e-9)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha), rtol=0, atol=1e-12)
    # The scales of the step a reverse step lands on: t - 1, and the data itself at t = 0.
    alpha_prev, sigma_prev = p.alpha_sigma(t, like, previous=True)
    assert (alpha_prev[0].item(), sigma_prev[0].item()) == (1.0, 0.0)
    before = p.alpha_sigma(t[1:] - 1, like[1:])
    torch.testing.assert_close((alpha_prev[1:], sigma_prev[1:]), before, rtol=0, atol=0)
    # In the dtype of ``like``: the float64 values rounded once (a cast, exact on any CPU).
    alpha32, sigma32 = p.alpha_sigma(t, like.float())
    assert alpha32.dtype == torch.float32
    assert torch.equal(alpha32, alpha.float()) and torch.equal(sigma32, sigma.float())


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_edm_sigmas_are_the_noise_to_signal_ratio(schedule):
    p = process(schedule)
    alpha, sigma = p.alpha_sigma(torch.arange(1000), torch.zeros(1000, dtype=F64))
    ratio = (sigma / alpha).numpy()
    # float64 roundoff only: the cosine schedule's abar_T ~ 2e-9 summed in log space over
    # 1000 steps differs from the running product by ~2e-9 relative.
    np.testing.assert_allclose(p.edm_sigmas, ratio, rtol=1e-12)
    np.testing.assert_allclose(p.edm_sigmas, np.sqrt(1 / independent_abar(p) - 1), rtol=1e-8)
    # At the first step abar = 1 - beta_1: sigma = sqrt(beta_1 / (1 - beta_1)).
    assert p.edm_sigmas[0] == pytest.approx(np.sqrt(p.betas[0] / (1 - p.betas[0])), rel=1e-12)
    assert (np.diff(p.edm_sigmas) > 0).all()
    kept = [0, 10, 500, 999]
    # Respacing rebuilds abar from its own betas: the same roundoff as above.
    np.testing.assert_allclose(p.respace(kept).edm_sigmas, p.edm_sigmas[kept], rtol=1e-8)
    # A copy: changing it leaves the process alone.
    p.edm_sigmas[:] = 0.0
    assert (p.edm_sigmas > 0).all()


@pytest.mark.parametrize("prediction", ["eps", "x0", "mean", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_every_parameterization_recovers_x0_and_eps(prediction, schedule):
    p = process(schedule, prediction=prediction)
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand(5, 2, 4, 4, generator=generator, dtype=F64) * 2 - 1
    eps = torch.randn(5, 2, 4, 4, generator=generator, dtype=F64)
    t = torch.tensor([0, 1, 250, 700, 998])
    x_t = p.q_sample(x0, t, eps)
    target = p.prediction_target(x0, x_t, t, eps)
    out = p.p_mean_variance(target, x_t, t, clip_denoised=False)
    # Near t = T (cosine), x0 = (x_t - b eps) / a divides by a ~ 1e-2: allow for roundoff.
    torch.testing.assert_close(out["pred_x0"], x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(out["pred_eps"], eps, rtol=0, atol=1e-9)
    torch.testing.assert_close(out["mean"], p.q_posterior(x0, x_t, t)[0], rtol=0, atol=1e-9)


def test_variances():
    p = process("linear", variance="fixed_large")
    x = torch.zeros(3, 1, 2, 2, dtype=F64)
    t = torch.tensor([0, 1, 999])
    out = p.p_mean_variance(torch.zeros_like(x), x, t)
    expected = [p.posterior_variance[1], p.betas[1], p.betas[999]]
    np.testing.assert_allclose(out["variance"][:, 0, 0, 0].numpy(), expected)
    np.testing.assert_allclose(out["log_variance"][:, 0, 0, 0].numpy(), np.log(expected))
    # fixed_small as in guided-diffusion: beta~ itself (0 at the first step), its log clipped.
    small = process("linear").p_mean_variance(torch.zeros_like(x), x, t)
    expected = [0.0, p.posterior_variance[1], p.posterior_variance[999]]
    np.testing.assert_allclose(small["variance"][:, 0, 0, 0].numpy(), expected)
    expected[0] = p.posterior_variance[1]
    np.testing.assert_allclose(small["log_variance"][:, 0, 0, 0].numpy(), np.log(expected))

    ranged = process("cosine", variance="learned_range", loss="hybrid")
    x = torch.zeros(2, 1, 1, 1, dtype=F64)
    t = torch.tensor([5, 5])
    v = torch.tensor([-1.0, 1.0], dtype=F64).reshape(2, 1, 1, 1)
    out = ranged.p_mean_variance(torch.cat([torch.zeros_like(x), v], 1), x, t)
    np.testing.assert_allclose(
        out["log_variance"].flatten().numpy(),
        [np.log(ranged.posterior_variance[5]), np.log(ranged.betas[5])],
    )
    learned = process("linear", variance="learned", loss="kl")
    out = learned.p_mean_variance(torch.cat([torch.zeros_like(x), v], 1), x, t)
    np.testing.assert_allclose(out["variance"].flatten().numpy(), np.exp([-1.0, 1.0]))


def test_ddim_with_eta_one_is_the_ddpm_step():
    p = process("cosine")
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 5, 5, generator=generator, dtype=F64)
    out = torch.randn(4, 3, 5, 5, generator=generator, dtype=F64)
    noise = torch.randn(4, 3, 5, 5, generator=generator, dtype=F64)
    t = torch.tensor([1, 20, 500, 999])
    torch.testing.assert_close(
        p.ddim_step(out, x, t, 1.0, noise, clip_denoised=False),
        p.ddpm_step(out, x, t, noise, clip_denoised=False),
    )
    # eta = 0 is deterministic; at the last step every sampler returns pred_x0.
    t0 = torch.zeros(4, dtype=torch.long)
    pred = p.p_mean_variance(out, x, t0)
    torch.testing.assert_close(p.ddim_step(out, x, t0, 0.0, None), pred["pred_x0"])
    torch.testing.assert_close(p.ddpm_step(out, x, t0, noise), pred["mean"])


def test_ddim_reverse_step_inverts_the_ddim_step_for_a_fixed_prediction():
    p = process("linear", prediction="x0")
    x0 = torch.rand(2, 1, 3, 3, dtype=F64) * 2 - 1
    t = torch.tensor([300, 300])
    x_t = p.q_sample(x0, t, torch.randn_like(x0))
    x_next = p.ddim_reverse_step(x0, x_t, t)
    # With x0 known exactly, stepping back from t + 1 with the same prediction returns x_t.
    torch.testing.assert_close(p.ddim_step(x0, x_next, t + 1, 0.0, None, clip_denoised=False), x_t)


def test_clipping_bounds_pred_x0():
    p = process("linear", prediction="x0")
    x = torch.zeros(1, 1, 2, 2)
    out = p.p_mean_variance(torch.full_like(x, 5.0), x, torch.tensor([10]))
    assert out["pred_x0"].max().item() == 1.0


def test_clipping_keeps_the_mean_of_a_mean_network_and_clips_only_its_x0():
    """As DDPM's and guided-diffusion's code: a "mean" network's output is the step's mean
    whether or not x0 is clipped; clip_denoised changes only the reported pred_x0."""
    p = process("linear", prediction="mean")
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, 3, 3, generator=generator, dtype=F64)
    output = 3 * torch.randn(4, 2, 3, 3, generator=generator, dtype=F64)
    t = torch.tensor([1, 40, 500, 999])
    clipped = p.p_mean_variance(output, x, t, clip_denoised=True)
    free = p.p_mean_variance(output, x, t, clip_denoised=False)
    assert torch.equal(clipped["mean"], output)
    assert free["pred_x0"].abs().max() > 1  # the clip has something to do
    torch.testing.assert_close(clipped["pred_x0"], free["pred_x0"].clamp(-1, 1), rtol=0, atol=0)
    # Recomputing the mean from the clipped x0 would have moved it.
    assert not torch.allclose(p.q_posterior(clipped["pred_x0"], x, t)[0], output)
    # A whole chain: clipping changes no sample of a mean network.
    model = Cheat(output[:1]).requires_grad_(False)
    x_T = torch.randn(1, 2, 3, 3, generator=generator, dtype=F64)
    short = p.respace(range(0, 1000, 100))
    for chain in (p, short):
        samples = [
            ddpm_sample(
                model, chain, x_T, clip_denoised=clip, generator=torch.Generator().manual_seed(0)
            )
            for clip in (True, False)
        ]
        torch.testing.assert_close(samples[0], samples[1], rtol=0, atol=0)


def test_a_respaced_mean_network_steps_through_its_unclipped_x0():
    """On a respaced chain the network's one-step mean gives x0 with the coefficients it
    was trained with, and the kept step's mean is mu~(x_t, x0) of that unclipped x0."""
    full = process("linear", prediction="mean")
    short = full.respace(range(0, 1000, 10))
    x = torch.randn(3, 1, 2, 2, dtype=F64)
    output = 4 * torch.randn(3, 1, 2, 2, dtype=F64)
    t = torch.tensor([1, 50, 99])
    x0 = full.p_mean_variance(output, x, t * 10, clip_denoised=False)["pred_x0"]
    pred = short.p_mean_variance(output, x, t, clip_denoised=True)
    # Roundoff of the inverted posterior coefficients (x0 has magnitudes up to ~1e2 at t=990).
    torch.testing.assert_close(pred["mean"], short.q_posterior(x0, x, t)[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(pred["pred_x0"], x0.clamp(-1, 1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_clipping_moves_the_mean_of_eps_x0_and_v_networks(prediction):
    p = process("cosine", prediction=prediction)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(3, 2, 3, 3, generator=generator, dtype=F64)
    output = 3 * torch.randn(3, 2, 3, 3, generator=generator, dtype=F64)
    t = torch.tensor([2, 300, 900])
    pred = p.p_mean_variance(output, x, t, clip_denoised=True)
    free = p.p_mean_variance(output, x, t, clip_denoised=False)
    assert pred["pred_x0"].abs().max() == 1 and free["pred_x0"].abs().max() > 1
    expected = p.q_posterior(pred["pred_x0"], x, t)[0]
    torch.testing.assert_close(pred["mean"], expected, rtol=0, atol=0)
    assert not torch.allclose(pred["mean"], free["mean"])


def test_vb_terms_with_the_true_posterior():
    """A mean prediction equal to the true posterior mean has zero KL for t > 0."""
    p = process("linear", prediction="mean", loss="kl")
    x0 = torch.rand(3, 1, 4, 4, dtype=F64) * 2 - 1
    t = torch.tensor([1, 100, 999])
    x_t = p.q_sample(x0, t, torch.randn_like(x0))
    true_mean = p.q_posterior(x0, x_t, t)[0]
    vb = p.vb_terms_bpd(true_mean, x0, x_t, t)
    torch.testing.assert_close(vb, torch.zeros(3, dtype=F64), atol=1e-9, rtol=0)
    # At t = 0 the term is the decoder NLL: positive, in bits/dim.
    t0 = torch.zeros(3, dtype=torch.long)
    levels = torch.round((x0 + 1) * 127.5) / 127.5 - 1
    x_t0 = p.q_sample(levels, t0, torch.randn_like(levels))
    nll = p.vb_terms_bpd(p.q_posterior(levels, x_t0, t0)[0], levels, x_t0, t0)
    assert (nll > 0).all() and (nll < 8).all()


def test_prior_term_is_small_at_T():
    p = process("linear")
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    assert (p.prior_bpd(x0) < 1e-4).all()


class Cheat(torch.nn.Module):
    """A 'network' that outputs a given tensor, with a learnable scale for gradients."""

    def __init__(self, output):
        super().__init__()
        self.output = torch.nn.Parameter(output.clone())

    def forward(self, x, t, **kwargs):
        return self.output


def test_mse_loss_of_a_perfect_prediction_is_zero():
    for prediction in ("eps", "x0", "v", "mean"):
        p = process("linear", prediction=prediction)
        x0 = torch.rand(3, 1, 4, 4, dtype=F64) * 2 - 1
        noise = torch.randn_like(x0)
        t = torch.tensor([0, 10, 900])
        x_t = p.q_sample(x0, t, noise)
        model = Cheat(p.prediction_target(x0, x_t, t, noise))
        losses = p.training_losses(model, x0, t, noise)
        assert set(losses) == {"loss", "mse"}
        torch.testing.assert_close(losses["loss"], torch.zeros(3, dtype=F64))


def test_kl_and_hybrid_losses():
    x0 = torch.rand(3, 1, 4, 4, dtype=F64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 400])
    output = torch.randn(3, 2, 4, 4, dtype=F64)

    kl = process("cosine", T=500, variance="learned_range", loss="kl")
    losses = kl.training_losses(Cheat(output), x0, t, noise)
    x_t = kl.q_sample(x0, t, noise)
    torch.testing.assert_close(losses["loss"], 500 * kl.vb_terms_bpd(output, x0, x_t, t))

    hybrid = process("cosine", T=500, variance="learned_range", loss="hybrid")
    model = Cheat(output)
    losses = hybrid.training_losses(model, x0, t, noise)
    torch.testing.assert_close(losses["loss"], losses["mse"] + 0.5 * losses["vb"])
    losses["loss"].sum().backward()
    # The mean channels learn from the MSE alone: their gradient is d(mse)/d(output).
    expected = 2 * (output[:, :1] - noise) / 16
    torch.testing.assert_close(model.output.grad[:, :1], expected)
    assert model.output.grad[:, 1:].abs().sum() > 0


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "mean"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_min_snr_weights_give_every_prediction_the_same_weighted_x0_error(prediction, schedule):
    p = process(schedule, prediction=prediction)
    gamma = 5.0
    x0 = torch.rand(6, 1, 4, 4, dtype=F64) * 2 - 1
    x0_hat = x0 + 0.1 * torch.randn_like(x0)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 30, 120, 400, 700, 999])
    x_t = p.q_sample(x0, t, noise)
    # The output that implies x0_hat at x_t: the target of (x0_hat, the noise it implies).
    output = p.prediction_target(x0_hat, x_t, t, p.eps_from_x0(x_t, t, x0_hat))
    losses = p.training_losses(Cheat(output), x0, t, noise, mse_weights=p.min_snr_weights(t, gamma))
    abar = torch.from_numpy(p.alphas_cumprod[t.numpy()])
    snr = abar / (1 - abar)
    x0_error = ((x0 - x0_hat) ** 2).mean(dim=(1, 2, 3))
    # The paper's objective, min(SNR, gamma) ||x0 - x0_hat||^2, whatever the network predicts.
    expected = snr.clamp(max=gamma) * x0_error
    torch.testing.assert_close(losses["loss"], expected, rtol=1e-6, atol=0)
    unweighted = p.training_losses(Cheat(output), x0, t, noise)
    torch.testing.assert_close(losses["mse"], unweighted["loss"])


def test_min_snr_weights_of_eps_cap_the_low_noise_steps_only():
    p = process("cosine")
    t = torch.arange(1000)
    weights = p.min_snr_weights(t, 5.0)
    abar = torch.from_numpy(p.alphas_cumprod).float()
    snr = abar / (1 - abar)
    assert weights.dtype == torch.float32 and weights.shape == (1000,)
    assert torch.all(weights[snr <= 5] == 1)
    torch.testing.assert_close(weights[snr > 5], 5 / snr[snr > 5])
    assert weights[0] < 1e-3 and torch.all(weights.diff() >= 0)


def test_min_snr_weighting_refuses_the_kl_loss_and_a_non_positive_gamma():
    p = process("cosine", variance="learned_range", loss="kl")
    x0 = torch.zeros(2, 1, 4, 4)
    t = torch.tensor([3, 4])
    with pytest.raises(ConfigError, match="no MSE term"):
        p.training_losses(Cheat(torch.zeros(2, 2, 4, 4)), x0, t, mse_weights=torch.ones(2))
    for gamma in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="gamma must be positive"):
            p.min_snr_weights(t, gamma)


def test_bad_configurations_are_refused():
    with pytest.raises(ConfigError, match="hybrid"):
        process(variance="learned_range", loss="mse")
    with pytest.raises(ConfigError, match="learned variance"):
        process(loss="hybrid")
    with pytest.raises(ConfigError, match="prediction"):
        process(prediction="score")
    p = process(variance="learned_range", loss="hybrid")
    with pytest.raises(ConfigError, match="needs 6"):
        p.p_mean_variance(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.tensor([3]))


def test_from_config_builds_the_process_its_settings_describe():
    config = DiffusionConfig("cosine", 300, "v", "learned_range", "hybrid")
    built = GaussianDiffusion.from_config(config)
    # The same float64 computation on both sides: equal on any CPU.
    np.testing.assert_array_equal(built.betas, beta_schedule("cosine", 300))
    assert (built.prediction, built.variance, built.loss) == ("v", "learned_range", "hybrid")
    assert built.learns_variance and built.num_timesteps == 300
    assert repr(config.build()) == repr(built)
    # A config holds any known values; building one whose loss cannot train its learned
    # variance names the fix.
    with pytest.raises(ConfigError, match="use loss 'hybrid'"):
        GaussianDiffusion.from_config(DiffusionConfig(variance="learned", loss="mse"))
    for timesteps in (0, 2.5, True):  # True is an int to Python, not a count of steps
        with pytest.raises(ConfigError, match="timesteps must be a positive integer"):
            DiffusionConfig(timesteps=timesteps)


@pytest.mark.parametrize(
    ("name", "value"),
    [("prediction", "score"), ("variance", "big"), ("loss", "l1"), ("schedule", "quadratic")],
)
def test_config_and_process_refuse_unknown_values_with_one_message(name, value):
    message = rf"diffusion {name} '{value}' is not one of \("
    with pytest.raises(ConfigError, match=message):
        DiffusionConfig(**{name: value})
    if name != "schedule":  # the process takes betas, not a schedule's name
        with pytest.raises(ConfigError, match=message):
            process(**{name: value})


def test_oracle_is_the_minimum_mse_predictor():
    """Sanity check of the test oracle itself: it beats nearby linear predictors."""
    p = process("linear")
    oracle = GaussianOracle(p, 0.3, 0.6)
    generator = torch.Generator().manual_seed(3)
    x0 = 0.3 + 0.6 * torch.randn(200_000, 1, 1, 1, generator=generator, dtype=F64)
    noise = torch.randn(x0.shape, generator=generator, dtype=F64)
    t = torch.full((200_000,), 400)
    x_t = p.q_sample(x0, t, noise)
    best = ((oracle(x_t, t) - noise) ** 2).mean()
    for scale in (0.95, 1.05):
        assert ((scale * oracle(x_t, t) - noise) ** 2).mean() > best


def test_guided_diffusions_names_hold_its_tables():
    """The arrays ported code reads by guided-diffusion's names, against their closed forms
    (DDPM eq. 7: the posterior's mean coefficients and variance, its log clipped at t = 0
    to the value at t = 1)."""
    p = process("cosine")
    betas = p.betas
    abar = np.cumprod(1.0 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    np.testing.assert_allclose(p.alphas_cumprod, abar, rtol=1e-12)
    np.testing.assert_allclose(p.alphas_cumprod_prev, abar_prev, rtol=1e-12)
    np.testing.assert_allclose(p.alphas_cumprod_next, np.append(abar[1:], 0.0), rtol=1e-12)
    variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    np.testing.assert_allclose(p.posterior_variance, variance, rtol=1e-12)
    clipped = np.log(np.append(variance[1], variance[1:]))
    np.testing.assert_allclose(p.posterior_log_variance_clipped, clipped, rtol=1e-12)
    coef1 = betas * np.sqrt(abar_prev) / (1.0 - abar)
    coef2 = (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar)
    np.testing.assert_allclose(p.posterior_mean_coef1, coef1, rtol=1e-12)
    np.testing.assert_allclose(p.posterior_mean_coef2, coef2, rtol=1e-12)
