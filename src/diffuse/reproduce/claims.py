"""The claims of issue 13, declared as experiments at CPU scale, and the models they train.

Each claim is a trend of a paper, measured on small models of Fashion-MNIST (14x14 with
the ``fashion-14`` family where a claim needs many models, 28x28 where it needs the full
resolution) or of scikit-learn's digits (where one model sampled many ways is enough).
Budgets: every model states its steps; the whole suite is sized to about 8 hours on a
2-core CPU (``diffuse reproduce --list`` prints each claim's estimate and the total, from
:mod:`diffuse.reproduce.costs`). Each ``fashion-14`` model trains 750 steps of 128 images
(1.6 epochs, about 12 minutes): far from the presets' 10,000-step recipe, so every FID
here is high in absolute terms; the claims are about the differences.

Sample quality is FID (with precision and recall, k = 3; the Inception Score where the
Inception weights have their logits layer) of class-balanced samples against the first
10,000 training images, fitted to the models' resolution; the floor is the FID of real
test images, as many as the samples, against the same reference. Bits/dim are the full
variational bound on the first test images.

The papers' numbers are as published, on their data sets (CIFAR-10, ImageNet); ours are
on Fashion-MNIST or digits, so only the directions compare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from diffuse.reproduce.costs import training_minutes
from diffuse.reproduce.plan import (
    NOISE_SDS,
    Claim,
    Curve,
    Likelihood,
    Measured,
    ModelPlan,
    Part,
    Plot,
    Progressive,
    Quality,
    Reference,
    Sampling,
    Verdict,
)

F14_STEPS = 750
LEARNED = {"diffusion.variance": "learned_range", "model.out_channels": 2}
ADM = {"model.resample": "resblock"}


def _models(*plans: ModelPlan) -> dict[str, ModelPlan]:
    return {plan.name: plan for plan in plans}


def _f14(name: str, description: str, **settings) -> ModelPlan:
    return ModelPlan(
        name, "fashion-14", "fashion-mnist", F14_STEPS, settings, description=description
    )


_BASE = _f14(
    "f14-cosine-simple",
    "the fashion-14 preset: cosine schedule, eps, L_simple, fixed small variance, "
    "class-conditional with label dropout 0.1",
)
_UPSAMPLER = ModelPlan(
    "f28-upsampler",
    "fashion-upsampler-14-28",
    "fashion-mnist",
    250,
    description="the 14 -> 28 upsampler (ADM's second stage)",
)


def _equal_budget_steps() -> int:
    """Steps of the single-stage 28x28 model that cost what the two stages cost together."""
    minutes = training_minutes(_BASE, 1.0) + training_minutes(_UPSAMPLER, 1.0)
    probe = ModelPlan("probe", "fashion", "fashion-mnist", 1000)
    return round(1000 * minutes / training_minutes(probe, 1.0))


# The article of issue 14: its five block recipes, sized for Fashion-MNIST on this CPU
# (presets fashion-article-*), each trained for the same minutes.
ARTICLE_MINUTES = 10.0
ARTICLE_VARIANTS = {
    "res-conv": "res, conv, clsatn, chnatn",
    "res": "res, clsatn, chnatn",
    "res-res": "res, res, clsatn, chnatn",
    "res-res-atn": "res, res, clsatn, atn, chnatn",
    "res-large": "res, clsatn, chnatn at 1.5 times the width",
}
ARTICLE_EVAL_SAMPLES = 250


def _article_model(variant: str, recipe: str) -> ModelPlan:
    """A ``fashion-article-*`` model trained for :data:`ARTICLE_MINUTES` (at its measured
    cost per step), FID tracked four times along the way (the article's "minimum FID over
    training"), against 2,000 training images."""
    preset = f"fashion-article-{variant}"
    probe = ModelPlan("probe", preset, "fashion-mnist", 1000)
    steps = round(1000 * ARTICLE_MINUTES / training_minutes(probe, 1.0))
    return ModelPlan(
        f"article-{variant}",
        preset,
        "fashion-mnist",
        steps,
        {
            "train.eval_every": math.ceil(steps / 4),
            "train.eval_samples": ARTICLE_EVAL_SAMPLES,
            "train.eval_reference": 2000,
        },
        description=f"the {preset} preset ({recipe}), {ARTICLE_MINUTES:g} minutes",
    )


MODELS: dict[str, ModelPlan] = _models(
    _BASE,
    _f14(
        "f14-linear-simple",
        "DDPM's process: linear schedule, eps, L_simple, fixed large variance (beta)",
        **{"diffusion.schedule": "linear", "diffusion.variance": "fixed_large"},
    ),
    _f14(
        "f14-linear-vlb",
        "DDPM's true variational bound L: linear schedule, eps, fixed large variance, "
        "uniform timesteps",
        **{
            "diffusion.schedule": "linear",
            "diffusion.variance": "fixed_large",
            "diffusion.loss": "kl",
            "train.timestep_sampler": "uniform",
        },
    ),
    _f14(
        "f14-cosine-hybrid",
        "Improved DDPM: learned interpolated variance, L_hybrid",
        **LEARNED,
        **{"diffusion.loss": "hybrid"},
    ),
    _f14(
        "f14-cosine-vlb-uniform",
        "learned variance trained on L_vlb alone, timesteps drawn uniformly",
        **LEARNED,
        **{"diffusion.loss": "kl", "train.timestep_sampler": "uniform", "train.log_every": 1},
    ),
    _f14(
        "f14-cosine-vlb-importance",
        "learned variance trained on L_vlb alone, importance-sampled timesteps",
        **LEARNED,
        **{"diffusion.loss": "kl", "train.timestep_sampler": "loss-aware", "train.log_every": 1},
    ),
    _f14(
        "f14-unconditional",
        "the fashion-14 network without classes",
        **{"model.num_classes": None, "model.null_class": False},
    ),
    ModelPlan(
        "f14-classifier",
        "fashion-14",
        "fashion-mnist",
        F14_STEPS,
        {"train.batch_size": 128},
        task="classifier",
        description="ADM's noisy classifier: the fashion-14 encoder with attention pooling",
    ),
    _f14("f14-cfg-p0.2", "label dropout 0.2", **{"train.p_uncond": 0.2}),
    _f14("f14-cfg-p0.5", "label dropout 0.5", **{"train.p_uncond": 0.5}),
    _f14(
        "f14-adm",
        "ADM's three changes: BigGAN resampling, adaptive GroupNorm, attention at 14x14 "
        "and 32 channels per head",
        **ADM,
    ),
    _f14(
        "f14-adm-no-adagn",
        "ADM without adaptive GroupNorm",
        **ADM,
        **{"model.scale_shift_norm": False},
    ),
    _f14(
        "f14-adm-no-attention",
        "ADM without attention at 14x14 and with one head (attention in the middle block only)",
        **ADM,
        **{
            "model.attention_resolutions": [],
            "model.num_head_channels": None,
            "model.num_heads": 1,
        },
    ),
    _UPSAMPLER,
    ModelPlan(
        "f28-single",
        "fashion",
        "fashion-mnist",
        _equal_budget_steps(),
        description="the 28x28 fashion preset, trained as long as the two stages together",
    ),
    ModelPlan("digits", "digits", "digits", 800, description="the digits preset"),
    *(_article_model(variant, recipe) for variant, recipe in ARTICLE_VARIANTS.items()),
)

F14_REFERENCE = Reference("fashion-mnist", "train", 10_000, 14)
F14_FLOOR = Reference("fashion-mnist", "test", 2000, 14)
F14_FLOOR_1K = Reference("fashion-mnist", "test", 1000, 14)
F28_REFERENCE = Reference("fashion-mnist", "train", 10_000)
F28_FLOOR = Reference("fashion-mnist", "test", 2000)
DIGITS_REFERENCE = Reference("digits", "train", 1498)
DIGITS_FLOOR = Reference("digits", "test", 299)

FAST = dict(sampler="dpm++2m", steps="20")  # where the sampler is not what is measured


def _fmt(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "nan"


def _noise_note(a: Measured, b: Measured) -> tuple[bool, str]:
    """Whether ``a`` and ``b`` differ by under :data:`NOISE_SDS` standard deviations of
    their noise, and the note that says so ("" where they do not)."""
    noise = NOISE_SDS * math.hypot(a.sd, b.sd)
    if not abs(a.value - b.value) < noise:
        return False, ""
    return True, f" (within the noise: {NOISE_SDS:g} sd of the difference = {noise:.2f})"


def less(text: str, a: float | Measured, b: float | Measured) -> Part:
    """The part "a < b", its numbers in its text; within the noise where the difference is
    under :data:`NOISE_SDS` standard deviations of the two measurements' noise."""
    a, b = Measured.of(a), Measured.of(b)
    within, note = _noise_note(a, b)
    return Part(f"{text}: {_fmt(a.value)} < {_fmt(b.value)}{note}", a.value < b.value, within)


def best_inside(
    text: str, fids: Mapping[float, Measured], inside: Callable[[float], bool], name: str
) -> Part:
    """The part "the lowest FID lies at an x that ``inside`` accepts", the x in its text;
    within the noise where the best FID inside and the best outside are."""
    best = min(fids, key=lambda x: fids[x].value)
    within, note = _noise_note(
        min(fid for x, fid in fids.items() if inside(x)),
        min(fid for x, fid in fids.items() if not inside(x)),
    )
    return Part(f"{text} (at {name} = {best:g}){note}", inside(best), within)


# --- 1. DDPM objectives -------------------------------------------------------------------


def _check_objectives(r) -> Verdict:
    return Verdict(
        (
            less(
                "FID, L_simple below L (true bound)",
                r.fid("L_simple", 0),
                r.fid("L", 0),
            ),
            less("bits/dim, L below L_simple", r.nll("L"), r.nll("L_simple")),
        )
    )


OBJECTIVES = Claim(
    name="ddpm-objectives",
    number=1,
    title="epsilon prediction with L_simple samples better than the true bound L; L gives the better NLL",
    source="DDPM (Ho et al. 2020), Tables 1 and 2",
    paper="CIFAR-10, eps prediction, fixed isotropic variance: L_simple FID 3.17, NLL <= 3.75; "
    "the true bound L FID 13.51, NLL <= 3.70 (mean prediction with L, fixed isotropic Sigma: "
    "FID 13.22)",
    trend="FID(L_simple) < FID(L) and bits/dim(L) < bits/dim(L_simple)",
    check=_check_objectives,
    reference=F14_REFERENCE,
    floor=F14_FLOOR,
    quality=(
        Quality("L_simple", 0, Sampling("f14-linear-simple", **FAST)),
        Quality("L", 0, Sampling("f14-linear-vlb", **FAST)),
    ),
    likelihood=(Likelihood("L_simple", "f14-linear-simple"), Likelihood("L", "f14-linear-vlb")),
)

# --- 2. learned variances -----------------------------------------------------------------

VARIANCE_SERIES = {
    "learned (L_hybrid)": ("f14-cosine-hybrid", None),
    "fixed small (L_simple)": ("f14-cosine-simple", "fixed_small"),
    "fixed large (L_simple)": ("f14-cosine-simple", "fixed_large"),
}
RESPACED = (25, 50, 100)


def _check_variances(r) -> Verdict:
    def loss(series: str) -> Measured:
        return r.fid(series, 25) - r.fid(series, 100)

    learned = "learned (L_hybrid)"
    parts = [
        less(f"FID lost from 100 to 25 steps, learned below {name}", loss(learned), loss(name))
        for name in VARIANCE_SERIES
        if name != learned
    ]
    parts.append(less("bits/dim, L_hybrid below L_simple", r.nll("L_hybrid"), r.nll("L_simple")))
    return Verdict(tuple(parts))


VARIANCES = Claim(
    name="learned-variance",
    number=2,
    title="learned variances (L_hybrid) keep their FID with 25-100 respaced steps where fixed ones degrade; L_hybrid improves NLL",
    source="Improved DDPM (Nichol & Dhariwal 2021), Fig. 8 and Tables 1-2",
    paper="Fig. 8 (ImageNet 64, CIFAR-10; models trained with T = 4000): with respaced "
    "ancestral sampling the L_hybrid model with learned variances stays near its full-chain "
    "FID down to about 100 steps, while L_simple with fixed sigma^2 = beta or beta-tilde "
    "degrades much more as steps are cut. Table 1 (ImageNet 64, cosine, 200K iterations): "
    "bits/dim L_hybrid 3.62, L_simple 3.68",
    trend="FID(25 steps) - FID(100 steps) smaller for the learned variance than for either "
    "fixed one; bits/dim(L_hybrid) < bits/dim(L_simple)",
    check=_check_variances,
    reference=F14_REFERENCE,
    floor=F14_FLOOR_1K,
    quality=tuple(
        Quality(series, steps, Sampling(model, "ddpm", str(steps), variance=variance, n=1000))
        for series, (model, variance) in VARIANCE_SERIES.items()
        for steps in RESPACED
    ),
    likelihood=(
        Likelihood("L_hybrid", "f14-cosine-hybrid"),
        Likelihood("L_simple", "f14-cosine-simple"),
    ),
    plots=(Plot("fid_vs_steps.png", "fid", "respaced sampling steps (ancestral)", logx=True),),
)

# --- 3. the cosine schedule ---------------------------------------------------------------

SKIPS = (0.0, 0.1, 0.2)


def _check_schedules(r) -> Verdict:
    def increase(series: str) -> Measured:
        return r.fid(series, 0.2) / r.fid(series, 0.0) - 1

    return Verdict(
        (
            less(
                "FID, cosine below linear",
                r.fid("cosine", 0.0),
                r.fid("linear", 0.0),
            ),
            less("bits/dim, cosine below linear", r.nll("cosine"), r.nll("linear")),
            less(
                "relative FID increase when the first 20% of the reverse process is skipped, "
                "linear below cosine",
                increase("linear"),
                increase("cosine"),
            ),
        )
    )


SCHEDULES = Claim(
    name="cosine-schedule",
    number=3,
    title="the cosine schedule beats the linear one at low resolution; the linear schedule's last steps are nearly pure noise",
    source="Improved DDPM (Nichol & Dhariwal 2021), Table 1, Figs. 3-5",
    paper="Table 1 (ImageNet 64, T = 4000, L_simple, 200K iterations): linear FID 31.3, "
    "NLL 3.77; cosine FID 27.0, NLL 3.68. Figs. 3-4: the end of the linear schedule's "
    "forward process is nearly pure noise (Fig. 3), and a linear-schedule model's FID does "
    "not get much worse when up to 20% of its reverse process is skipped (Fig. 4)",
    trend="FID and bits/dim lower with the cosine schedule; skipping the first 20% of the "
    "reverse process costs the linear model less FID (relative) than the cosine one",
    check=_check_schedules,
    reference=F14_REFERENCE,
    floor=F14_FLOOR_1K,
    quality=tuple(
        Quality(series, skip, Sampling(model, "ddim", "even50", skip=skip, n=1000))
        for series, model in (("linear", "f14-linear-simple"), ("cosine", "f14-cosine-simple"))
        for skip in SKIPS
    ),
    likelihood=(
        Likelihood("linear", "f14-linear-simple", variance="fixed_small"),
        Likelihood("cosine", "f14-cosine-simple"),
    ),
    plots=(
        Plot(
            "fid_vs_skipped.png", "fid", "fraction of the reverse process skipped (DDIM, 50 steps)"
        ),
    ),
)

# --- 4. importance sampling ---------------------------------------------------------------

LOSS_KEYS = ("loss_weighted", "loss")


def _check_importance(r) -> Verdict:
    noise = {name: r.curves[name]["noise"] for name in ("uniform", "importance")}
    return Verdict(
        (
            less(
                "per-step noise of the L_vlb estimate, importance below uniform",
                noise["importance"],
                noise["uniform"],
            ),
            less("bits/dim, importance below uniform", r.nll("importance"), r.nll("uniform")),
        )
    )


IMPORTANCE = Claim(
    name="importance-sampling",
    number=4,
    title="importance-sampled timesteps make L_vlb training less noisy and reach a better NLL",
    source="Improved DDPM (Nichol & Dhariwal 2021), Fig. 6 and Table 1",
    paper="Fig. 6 (ImageNet 64): the learning curve of L_vlb with importance sampling is far "
    "smoother than with uniform timesteps and reaches the best log-likelihood; Table 1: "
    "L_vlb 3.57 bits/dim at 200K iterations, 3.53 at 1.5M (L_hybrid 3.62, 3.57)",
    trend="relative step-to-step noise of the logged L_vlb estimate and bits/dim both lower "
    "with importance sampling",
    check=_check_importance,
    curves=(
        Curve("uniform", "f14-cosine-vlb-uniform", LOSS_KEYS),
        Curve("importance", "f14-cosine-vlb-importance", LOSS_KEYS),
    ),
    likelihood=(
        Likelihood("uniform", "f14-cosine-vlb-uniform"),
        Likelihood("importance", "f14-cosine-vlb-importance"),
        Likelihood("L_hybrid", "f14-cosine-hybrid"),
    ),
    # The weighted L_vlb spans orders of magnitude (its t = 0 terms): a log axis.
    plots=(Plot("training_loss.png", "curve", "training step", logy=True),),
)

# --- 5. DDIM --------------------------------------------------------------------------------

DDIM_STEPS = (10, 20, 50, 100, 1000)
DDIM_SERIES = {
    "eta 0": dict(sampler="ddim"),
    "eta 1": dict(sampler="ddim", eta=1.0),
    "sigma-hat": dict(sampler="ddpm", variance="fixed_large"),
}


def _check_ddim(r) -> Verdict:
    fid = r.fid
    parts = [
        less(
            f"{steps} steps, eta 0 below the best of eta 1 and sigma-hat",
            fid("eta 0", steps),
            min(fid("eta 1", steps), fid("sigma-hat", steps)),
        )
        for steps in (10, 20, 50)
    ]
    gap = {s: fid("eta 1", s) - fid("eta 0", s) for s in (10, 1000)}
    parts.append(
        less("the eta 1 - eta 0 gap closes: gap at 1000 steps below gap at 10", gap[1000], gap[10])
    )
    parts.append(
        less(
            "100 DDIM steps (eta 0) beat 1000 DDPM steps (eta 1)",
            fid("eta 0", 100),
            fid("eta 1", 1000),
        )
    )
    return Verdict(tuple(parts))


DDIM = Claim(
    name="ddim-eta",
    number=5,
    title="with the same model, eta = 0 is best at 10-50 steps; eta = 1 and sigma-hat degrade with few steps; the gap closes at 1000",
    source="DDIM (Song et al. 2021), Table 1",
    paper="CIFAR-10 FID at S = 10 / 20 / 50 / 100 / 1000 steps: eta 0: 13.36 / 6.84 / 4.67 / "
    "4.16 / 4.04; eta 1: 41.07 / 18.36 / 8.01 / 5.78 / 4.73; sigma-hat: 367.43 / 133.37 / "
    "32.72 / 9.99 / 3.17",
    trend="eta 0 best at 10, 20 and 50 steps; the eta 1 - eta 0 gap smaller at 1000 steps "
    "than at 10; eta 0 at 100 steps below eta 1 at 1000",
    check=_check_ddim,
    reference=DIGITS_REFERENCE,
    floor=DIGITS_FLOOR,
    quality=tuple(
        Quality(series, steps, Sampling("digits", steps=str(steps), n=500, **options))
        for series, options in DDIM_SERIES.items()
        for steps in DDIM_STEPS
    ),
    plots=(Plot("fid_vs_steps.png", "fid", "sampling steps", logx=True),),
)

# --- 6. classifier guidance ---------------------------------------------------------------

SCALES = (0.0, 1.0, 3.0, 10.0)


def _guided(model: str, scale: float) -> Sampling:
    classifier = None if scale == 0 else "f14-classifier"
    return Sampling(
        model, "ddim", "25", classifier=classifier, classifier_scale=scale or 1.0, n=1000
    )


def _check_guidance(r) -> Verdict:
    top = SCALES[-1]
    uncond = {s: r.point("unconditional", s) for s in SCALES}
    parts = [
        less(
            "unconditional: precision rises, unguided below the largest scale",
            r.measured("unconditional", 0.0, "precision"),
            r.measured("unconditional", top, "precision"),
        ),
        less(
            "unconditional: recall falls, largest scale below unguided",
            r.measured("unconditional", top, "recall"),
            r.measured("unconditional", 0.0, "recall"),
        ),
        best_inside(
            "unconditional: best FID at a moderate scale",
            {s: r.fid("unconditional", s) for s in SCALES},
            lambda s: 0 < s < top,
            "s",
        ),
        less(
            "conditional: guidance helps, best guided FID below unguided",
            min(r.fid("conditional", s) for s in SCALES[1:]),
            r.fid("conditional", 0.0),
        ),
    ]
    if "is" in uncond[0.0]:
        parts.append(
            less("unconditional: Inception Score rises", uncond[0.0]["is"], uncond[top]["is"])
        )
    return Verdict(tuple(parts))


GUIDANCE = Claim(
    name="classifier-guidance",
    number=6,
    title="classifier guidance trades recall for precision (and IS), FID best at a moderate scale; it helps conditional models too",
    source="ADM (Dhariwal & Nichol 2021), Fig. 4 and Table 4",
    paper="Table 4 (ImageNet 256, FID / IS / precision / recall): unconditional 26.21 / 39.70 "
    "/ 0.61 / 0.63; guided s = 1: 33.03 / 32.92 / 0.56 / 0.65; s = 10: 12.00 / 95.41 / 0.76 "
    "/ 0.44; conditional 10.94 / 100.98 / 0.69 / 0.63; conditional guided s = 1: 4.59 / "
    "186.70 / 0.82 / 0.52; s = 10: 9.11 / 283.92 / 0.88 / 0.32. Fig. 4 (class-conditional "
    "ImageNet 128): recall falls and precision and IS rise with the scale; FID is best at "
    "an intermediate scale",
    trend="for the unconditional model precision rises and recall falls with the scale, FID "
    "is best at a scale between the ends; the conditional model's best guided FID beats "
    "its unguided one",
    check=_check_guidance,
    reference=F14_REFERENCE,
    floor=F14_FLOOR_1K,
    quality=tuple(
        Quality(series, scale, _guided(model, scale))
        for series, model in (
            ("unconditional", "f14-unconditional"),
            ("conditional", "f14-cosine-simple"),
        )
        for scale in SCALES
    ),
    plots=(
        Plot("fid_vs_scale.png", "fid", "classifier scale s (DDIM, 25 steps)"),
        Plot("precision_vs_scale.png", "precision", "classifier scale s"),
        Plot("recall_vs_scale.png", "recall", "classifier scale s"),
    ),
)

# --- 7. classifier-free guidance ----------------------------------------------------------

WEIGHTS = (0.0, 0.5, 1.0, 3.0)
P_UNCOND = {
    "p_uncond 0.1": "f14-cosine-simple",
    "p_uncond 0.2": "f14-cfg-p0.2",
    "p_uncond 0.5": "f14-cfg-p0.5",
}


def _check_cfg(r) -> Verdict:
    top = WEIGHTS[-1]
    parts = []
    for series in P_UNCOND:
        parts += [
            best_inside(
                f"{series}: best FID at a small w > 0",
                {w: r.fid(series, w) for w in WEIGHTS},
                lambda w: 0 < w <= 1,
                "w",
            ),
            less(
                f"{series}: precision rises from w = 0 to {top:g}",
                r.measured(series, 0.0, "precision"),
                r.measured(series, top, "precision"),
            ),
            less(
                f"{series}: recall falls from w = 0 to {top:g}",
                r.measured(series, top, "recall"),
                r.measured(series, 0.0, "recall"),
            ),
        ]
    return Verdict(tuple(parts))


CFG = Claim(
    name="classifier-free-guidance",
    number=7,
    title="classifier-free guidance trades diversity for fidelity as w grows; best FID at a small w > 0",
    source="Ho & Salimans 2022 (arXiv 2207.12598), Table 1 (and Table 2)",
    paper="Table 1 (ImageNet 64, p_uncond 0.1 / 0.2 / 0.5, w from 0 to 4): FID is lowest at "
    "w = 0.1 (1.55 / 1.62 / 1.91, against 1.8 / 1.8 / 2.21 unguided) and grows with w while "
    "IS grows; p_uncond 0.5 is worse than 0.1 and 0.2 across the IS/FID frontier. Table 2 "
    "(ImageNet 128): best FID 2.43 at w = 0.3",
    trend="for each p_uncond: the best FID at 0 < w <= 1, precision higher and recall lower "
    "at w = 3 than at w = 0 (precision stands in for IS where the Inception weights lack "
    "their logits)",
    check=_check_cfg,
    reference=F14_REFERENCE,
    floor=F14_FLOOR_1K,
    quality=tuple(
        Quality(series, w, Sampling(model, cfg=w, n=1000, **FAST))
        for series, model in P_UNCOND.items()
        for w in WEIGHTS
    ),
    plots=(
        Plot("fid_vs_w.png", "fid", "guidance weight w (DPM-Solver++, 20 steps)"),
        Plot("precision_vs_w.png", "precision", "guidance weight w"),
        Plot("recall_vs_w.png", "recall", "guidance weight w"),
    ),
)

# --- 8. ADM's architecture ----------------------------------------------------------------

ABLATIONS = {
    "ADM (all three)": "f14-adm",
    "without BigGAN resampling": "f14-cosine-simple",
    "without adaptive GroupNorm": "f14-adm-no-adagn",
    "without attention at 14x14 and extra heads": "f14-adm-no-attention",
}


def _check_ablations(r) -> Verdict:
    full = r.fid("ADM (all three)", 0)
    return Verdict(
        tuple(
            less(f"FID with all three below {series}", full, r.fid(series, 0))
            for series in ABLATIONS
            if series != "ADM (all three)"
        )
    )


ABLATION = Claim(
    name="adm-ablations",
    number=8,
    title="BigGAN resampling, adaptive GroupNorm and more heads/attention each improve FID at equal training steps",
    source="ADM (Dhariwal & Nichol 2021), Tables 1-3",
    paper="ImageNet 128, FID at 700K / 1200K iterations: baseline 15.33 / 13.21; BigGAN "
    "up/down -1.20 / -1.21; 4 heads -0.54 / -0.82; attention at 32,16,8 -0.72 / -0.66; all "
    "-3.14 / -3.00 (Table 1). 64 channels per head -1.03 against one head (Table 2). "
    "Adaptive GroupNorm 13.06 against addition + GroupNorm 15.08 (Table 3)",
    trend="removing any one of the three raises FID",
    check=_check_ablations,
    reference=F14_REFERENCE,
    floor=F14_FLOOR,
    quality=tuple(
        Quality(series, 0, Sampling(model, **FAST)) for series, model in ABLATIONS.items()
    ),
)

# --- 9. two-stage upsampling --------------------------------------------------------------


def _check_upsampling(r) -> Verdict:
    return Verdict(
        (
            less(
                "FID at 28x28, two stages below one",
                r.fid("two-stage 14 -> 28", 0),
                r.fid("single-stage 28", 0),
            ),
        )
    )


UPSAMPLING = Claim(
    name="upsampling",
    number=9,
    title="a 14x14 base model and a 14 -> 28 upsampler beat a single 28x28 model at the same training budget",
    source="ADM (Dhariwal & Nichol 2021), Table 6",
    paper="ImageNet 256: single-stage ADM FID 10.94, with the 64 -> 256 upsampler (ADM-U) "
    "7.49; guided 4.59 against 3.94 (ADM-G, ADM-G+U); ImageNet 512 (128 -> 512 upsampler): "
    "23.24 against 9.96 unguided, 7.72 against 3.85 guided",
    trend="FID(two-stage) < FID(single-stage); both sides train for about the same minutes "
    "(the models' records give the measured ones)",
    check=_check_upsampling,
    reference=F28_REFERENCE,
    floor=F28_FLOOR,
    quality=(
        Quality(
            "two-stage 14 -> 28",
            0,
            Sampling(
                "f14-cosine-simple",
                upsampler="f28-upsampler",
                upsampler_sampler="dpm++2m",
                upsampler_steps="20",
                **FAST,
            ),
        ),
        Quality("single-stage 28", 0, Sampling("f28-single", **FAST)),
    ),
)

# --- 10. DDPM's figures -------------------------------------------------------------------


def _check_rate_distortion(r) -> Verdict:
    rows = r.likelihood["fashion 28x28"]["rate_distortion"]
    lossy = [row for row in rows if row["step"] >= 0]
    start, total = lossy[0]["distortion"], rows[-1]["rate"]
    reached = next((row for row in lossy if row["distortion"] < start / 5), lossy[-1])
    return Verdict(
        (
            less(
                f"bits/dim spent when the distortion falls below a fifth of its start "
                f"({start:.1f} RMSE), against half the lossless total",
                reached["rate"],
                total / 2,
            ),
        )
    )


FIGURES = Claim(
    name="ddpm-figures",
    number=10,
    title="progressive generation, and most of the rate spent on imperceptible distortion",
    source="DDPM (Ho et al. 2020), Fig. 6, Table 4 and Fig. 5",
    paper="CIFAR-10 (Table 4): the rate reaches 0.12 of its final 1.78 bits/dim when the "
    "distortion has already fallen from 67.6 to 12.0 RMSE (reverse time 900); the remaining "
    "1.66 bits/dim go to imperceptible detail (section 4.3: rate 1.78 and distortion 1.97 "
    "bits/dim, 3.75 in all). Fig. 6: large-scale features appear first",
    trend="the distortion falls below a fifth of its start before half of the lossless rate "
    "is spent; progressive-*.png shows the predicted x0 along the chain",
    check=_check_rate_distortion,
    likelihood=(Likelihood("fashion 28x28", "f28-single", n=50),),
    figures=(Progressive("f28-single"),),
    plots=(Plot("rate_distortion.png", "rate_distortion", "rate (bits/dim)"),),
)

# --- 11. The article's block recipes (issue 14) ------------------------------------------

ARTICLE_WAYS = {"DDPM": dict(sampler="ddpm"), "DDIM eta 0": dict(sampler="ddim")}
ARTICLE_ALL_STEPS = "res-res"  # the model sampled with all 1000 steps too


def _article_series(variant: str, way: str) -> str:
    return f"{variant}, {way}"


def _check_article(r) -> Verdict:
    lowest = {variant: r.curves[variant]["lowest"] for variant in ARTICLE_VARIANTS}
    two = min(lowest["res-res"], lowest["res-res-atn"])
    one = min(lowest[v] for v in ("res", "res-conv", "res-large"))
    attention = abs(lowest["res-res-atn"] - lowest["res-res"]) / lowest["res-res"]
    parts = [
        less("lowest FID while training, two residual blocks below one", two, one),
        less("spatial attention changes the lowest FID by under 10 %", attention, 0.10),
    ]
    ddim = r.fid(_article_series(ARTICLE_ALL_STEPS, "DDIM eta 0"), 100)
    others = {
        "DDPM, 1000 steps": r.fid(_article_series(ARTICLE_ALL_STEPS, "DDPM"), 1000),
        "DDPM, 100 steps": r.fid(_article_series(ARTICLE_ALL_STEPS, "DDPM"), 100),
        "DDIM, 1000 steps": r.fid(_article_series(ARTICLE_ALL_STEPS, "DDIM eta 0"), 1000),
    }
    parts += [
        less(f"{ARTICLE_ALL_STEPS}: FID of DDIM with 100 steps below {way}", ddim, fid)
        for way, fid in others.items()
    ]
    return Verdict(tuple(parts))


def _article_quality() -> tuple[Quality, ...]:
    """Every model with 100 steps both ways, then the all-steps model with 1000 (the
    costliest last, so that an interrupted run has the comparison of the five first)."""
    counts = [(variant, 100) for variant in ARTICLE_VARIANTS] + [(ARTICLE_ALL_STEPS, 1000)]
    return tuple(
        Quality(
            _article_series(variant, way),
            steps,
            Sampling(f"article-{variant}", steps=str(steps), n=ARTICLE_EVAL_SAMPLES, **sampler),
        )
        for variant, steps in counts
        for way, sampler in ARTICLE_WAYS.items()
    )


ARTICLE = Claim(
    name="article-blocks",
    number=11,
    title="two residual blocks per level sample best; spatial attention adds little; 100 DDIM steps beat 1000 DDPM steps",
    source="G. Mongaras, the DDPM/DDIM/classifier-free-guidance article (issue 14), 'My Results'",
    paper="ImageNet 64x64, five block recipes trained 600,000 steps of 1024, FID of 10,000 "
    "unguided samples every 50,000 steps, the minimum reported, each sampled four ways "
    "(DDPM and DDIM, all 1000 steps and every 10th): the two models with two residual "
    "blocks best; attention about the same as without; DDIM with 100 steps better than "
    "every other way, DDPM with 1000 steps included (numbers only as plots)",
    trend="at equal training minutes, the lowest FID tracked while training is lower "
    "with two residual blocks than with one, attention moves it by under 10 %; for "
    f"{ARTICLE_ALL_STEPS}, DDIM with 100 steps has the lowest FID of the four ways",
    check=_check_article,
    reference=Reference("fashion-mnist", "train", 2000),
    floor=Reference("fashion-mnist", "test", ARTICLE_EVAL_SAMPLES),
    quality=_article_quality(),
    curves=tuple(Curve(variant, f"article-{variant}", ("fid",)) for variant in ARTICLE_VARIANTS),
    plots=(
        Plot("fid_while_training.png", "curve", "fraction of the training minutes", fraction=True),
        Plot("fid_vs_steps.png", "fid", "sampling steps", logx=True),
    ),
)

CLAIMS: dict[str, Claim] = {
    claim.name: claim
    for claim in (
        OBJECTIVES,
        VARIANCES,
        SCHEDULES,
        IMPORTANCE,
        DDIM,
        GUIDANCE,
        CFG,
        ABLATION,
        UPSAMPLING,
        FIGURES,
        ARTICLE,
    )
}
