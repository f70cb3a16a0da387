"""The full variational bound in bits/dim, and DDPM's rate-distortion view of it."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from diffuse.diffusion.gaussian import GaussianDiffusion, Model
from diffuse.diffusion.noise import Generator, randn_like

# The data in [-1, 1] spans 255 grey levels in 2 units: RMSE on [0, 255] = RMSE * 127.5.
PIXEL_SCALE = 127.5


@torch.no_grad()
def bits_per_dim(
    model: Model,
    process: GaussianDiffusion,
    x0: torch.Tensor,
    *,
    model_kwargs: dict | None = None,
    clip_denoised: bool = False,
    generator: Generator = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Every term of the variational bound of ``x0`` (DDPM eq. 5), per example.

    Returns a dict:
      ``total`` [N]:  L_T + sum_t L_{t-1} + L_0, the negative log-likelihood bound in
                      bits/dim (DDPM Table 1, Improved DDPM Table 2);
      ``prior`` [N]:  L_T = KL(q(x_T | x0) || N(0, I));
      ``vb`` [N, T]:  at index i > 0 the KL term of step i, at index 0 the decoder NLL L_0;
      ``x0_mse`` [N, T]: the mean-squared error between x0 and the x0 predicted from x_i;
      ``eps_mse`` [N, T]: the same for the noise.
    One network evaluation per step and example, at fresh noise per step.
    """
    T = process.num_timesteps
    vb, x0_mse, eps_mse = [], [], []
    for index in tqdm(range(T - 1, -1, -1), desc="bits/dim", disable=not progress, leave=False):
        t = torch.full((x0.shape[0],), index, device=x0.device, dtype=torch.long)
        noise = randn_like(x0, generator)
        x_t = process.q_sample(x0, t, noise)
        output = process.call_model(model, x_t, t, model_kwargs)
        pred = process.p_mean_variance(output, x_t, t, clip_denoised)
        vb.append(process.prediction_vb_terms_bpd(pred, x0, x_t, t))
        x0_mse.append(((pred["pred_x0"] - x0) ** 2).flatten(1).mean(1))
        eps_mse.append(((pred["pred_eps"] - noise) ** 2).flatten(1).mean(1))
    # Collected from T-1 down to 0; store with index = timestep.
    vb_terms = torch.stack(vb[::-1], dim=1)
    prior = process.prior_bpd(x0)
    return {
        "total": prior + vb_terms.sum(dim=1),
        "prior": prior,
        "vb": vb_terms,
        "x0_mse": torch.stack(x0_mse[::-1], dim=1),
        "eps_mse": torch.stack(eps_mse[::-1], dim=1),
    }


def rate_distortion(terms: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    """DDPM Table 4 / Fig. 5 from the output of :func:`bits_per_dim`.

    Progressive lossy coding (DDPM section 4.3, Algorithms 3 and 4): after receiving x_i
    the receiver has spent L_T plus the KL terms of every step above i, and its best
    guess of the image is the x0 predicted from x_i. One row per step, in the order the
    receiver goes (from i = T-1 down to 0): ``reverse_time`` (T - i), ``step`` (i),
    ``rate`` (cumulative bits/dim, averaged over examples) and ``distortion`` (the RMSE
    of the prediction on the [0, 255] scale). A last row adds L_0: the lossless total.
    """
    vb = terms["vb"].double()
    T = vb.shape[1]
    prior = terms["prior"].double().mean().item()
    per_step_kl = vb.mean(dim=0)
    rows = []
    rate = prior
    for index in range(T - 1, -1, -1):
        if index < T - 1:
            rate += per_step_kl[index + 1].item()
        rmse = terms["x0_mse"][:, index].double().mean().sqrt().item() * PIXEL_SCALE
        rows.append({"reverse_time": T - index, "step": index, "rate": rate, "distortion": rmse})
    rows.append(
        {"reverse_time": T, "step": -1, "rate": rate + per_step_kl[0].item(), "distortion": 0.0}
    )
    return rows
