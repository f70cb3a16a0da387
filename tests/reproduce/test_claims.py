"""The declared suite: every claim of issue 13 (and issue 14's comparison of the article's
block recipes) with models that can be trained as declared, budgets that add up to about
8 hours, and checks that say "holds" on the papers' own numbers and "does not hold" on the
reverse."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

from diffuse.reproduce import report
from diffuse.reproduce.claims import (
    ARTICLE,
    ARTICLE_MINUTES,
    ARTICLE_VARIANTS,
    CFG,
    CLAIMS,
    DDIM,
    FIGURES,
    GUIDANCE,
    MODELS,
    OBJECTIVES,
    SCHEDULES,
)
from diffuse.reproduce.costs import estimate, evaluations, training_minutes
from diffuse.reproduce.plan import Measured, Part, Verdict
from diffuse.reproduce.runner import Results, Suite, step_noise


def test_every_claim_of_the_issue_is_declared_with_models_that_train():
    assert sorted(claim.number for claim in CLAIMS.values()) == list(range(1, 12))
    needed = {name for claim in CLAIMS.values() for name in claim.models}
    assert needed == set(MODELS)  # no model is declared for nothing
    Suite("unused", MODELS).check(CLAIMS.values())  # every spec and process builds
    for claim in CLAIMS.values():
        assert claim.source and claim.paper and claim.trend
        assert claim.quality or claim.likelihood or claim.curves


def test_the_budgets_add_up_to_about_eight_hours_on_two_cores():
    issue_13 = [claim for claim in CLAIMS.values() if claim.number <= 10]
    total = estimate(issue_13, MODELS)
    assert 7 * 60 < total.total < 9 * 60, total
    assert all(estimate([claim], MODELS).total > 5 for claim in CLAIMS.values())
    # at a tenth of the budget only the training shrinks (sample counts stay)
    tenth = estimate(issue_13, MODELS, 0.1)
    assert tenth.training == pytest.approx(total.training / 10, rel=0.02)
    assert tenth.sampling == total.sampling


def test_the_single_stage_model_trains_as_long_as_the_two_stages():
    stages = training_minutes(MODELS["f14-cosine-simple"], 1) + training_minutes(
        MODELS["f28-upsampler"], 1
    )
    assert training_minutes(MODELS["f28-single"], 1) == pytest.approx(stages, rel=0.01)


def test_the_articles_five_recipes_train_for_the_same_minutes():
    minutes = [training_minutes(MODELS[f"article-{v}"], 1) for v in ARTICLE_VARIANTS]
    assert minutes == pytest.approx([ARTICLE_MINUTES] * 5, rel=0.01)
    steps = {v: MODELS[f"article-{v}"].steps for v in ARTICLE_VARIANTS}
    assert steps["res"] > steps["res-res"] > steps["res-large"]  # cheaper: more steps
    for variant in ARTICLE_VARIANTS:  # FID four times along the way, the last at the end
        plan = MODELS[f"article-{variant}"]
        every = plan.spec(1).train.eval_every
        assert 3 * every < plan.steps <= 4 * every
    assert estimate([ARTICLE], MODELS).total < 150


def test_shared_work_is_counted_once():
    both = estimate([OBJECTIVES, SCHEDULES], MODELS)
    models = {*OBJECTIVES.models, *SCHEDULES.models}
    assert len(models) == 3  # the linear L_simple model serves both claims
    assert both.training == pytest.approx(sum(training_minutes(MODELS[m], 1) for m in models))


def test_sampling_work_counts_the_steps_walked():
    assert evaluations("dpm++2m", "20") == 20
    assert evaluations("ddim", "even50", skip=0.2) == 40
    assert evaluations("ddpm", "1000") == 1000


def rows(table: dict) -> list[dict]:
    return [
        {"series": series, "x": x, "fid": fid}
        for series, values in table.items()
        for x, fid in values.items()
    ]


# DDIM Table 1, CIFAR-10
DDIM_TABLE = {
    "eta 0": {10: 13.36, 20: 6.84, 50: 4.67, 100: 4.16, 1000: 4.04},
    "eta 1": {10: 41.07, 20: 18.36, 50: 8.01, 100: 5.78, 1000: 4.73},
    "sigma-hat": {10: 367.43, 20: 133.37, 50: 32.72, 100: 9.99, 1000: 3.17},
}


def test_the_ddim_check_holds_on_the_papers_table_and_fails_reversed():
    verdict = DDIM.check(Results(rows(DDIM_TABLE), {}, {}, None))
    assert verdict.holds and len(verdict.parts) == 5
    assert (
        verdict.parts[0].text
        == "10 steps, eta 0 below the best of eta 1 and sigma-hat: 13.36 < 41.07"
    )
    swapped = {
        "eta 0": DDIM_TABLE["eta 1"],
        "eta 1": DDIM_TABLE["eta 0"],
        "sigma-hat": DDIM_TABLE["sigma-hat"],
    }
    verdict = DDIM.check(Results(rows(swapped), {}, {}, None))
    assert not verdict.holds and verdict.summary() == "does not hold (5 of 5 parts fail)"


def test_a_difference_within_the_noise_is_marked_so_and_counted_in_the_verdict():
    # Claim 5 as the digits model gave it (2026-12-04): eta 0 against the best of eta 1
    # and sigma-hat, each FID of 500 samples with a bootstrap noise near 0.28.
    table = {"eta 0": {10: 12.38, 20: 11.94, 50: 11.94, 100: 11.97, 1000: 11.90}}
    table["eta 1"] = {10: 12.45, 20: 11.82, 50: 11.70, 100: 11.95, 1000: 11.96}
    table["sigma-hat"] = {10: 14.0, 20: 12.5, 50: 12.0, 100: 12.2, 1000: 11.9}
    quality = [{**row, "fid_sd": 0.28} for row in rows(table)]
    verdict = DDIM.check(Results(quality, {}, {}, None))
    assert verdict.parts[1].text == (
        "20 steps, eta 0 below the best of eta 1 and sigma-hat: 11.94 < 11.82 "
        "(within the noise: 2 sd of the difference = 0.79)"
    )
    assert all(part.within_noise for part in verdict.parts)  # gaps' noise: 4 FIDs each
    assert (
        verdict.summary() == "does not hold (3 of 5 parts fail); 5 of the 5 parts within the noise"
    )
    # the paper's table with the same noise: only 100 DDIM steps against 1000 DDPM steps
    # (4.16 against 4.73) would not be told apart
    quality = [{**row, "fid_sd": 0.28} for row in rows(DDIM_TABLE)]
    verdict = DDIM.check(Results(quality, {}, {}, None))
    assert verdict.summary() == "holds; 1 of the 5 parts within the noise"
    assert [part.within_noise for part in verdict.parts] == [False] * 4 + [True]


def stored(*parts: Part) -> dict:
    """A verdict as result.json stores it (diffuse.reproduce.runner)."""
    verdict = Verdict(parts)
    summary = verdict.summary()
    return {
        "verdict": {"holds": verdict.holds, "summary": summary, "parts": [asdict(p) for p in parts]}
    }


def test_the_reports_verdict_cell_carries_the_noise_count():
    sure, noisy, failed = Part("a", True), Part("b", True, True), Part("c", False, True)
    assert report._verdict(stored(sure, sure)) == "**yes**"
    assert report._verdict(stored(sure, noisy)) == "**yes** (1 of the 2 parts within the noise)"
    assert report._verdict(stored(sure, failed)) == (
        "**no**: does not hold (1 of 2 parts fail); 1 of the 2 parts within the noise"
    )
    older = {
        "verdict": {"holds": True, "summary": "holds", "parts": [{"text": "a", "holds": True}]}
    }
    assert report._verdict(older) == "**yes**"  # results written before the noise marks
    assert report._verdict(None) == "not run yet"


def test_the_best_guidance_scale_is_within_the_noise_where_the_ends_are_as_good():
    # Claim 6 as run (2026-12-03): the unconditional model's FID is lowest unguided,
    # 24.23 against 24.60 at s = 3, each +- about 0.6: the failing part is no evidence.
    fid = {0.0: 24.23, 1.0: 26.29, 3.0: 24.60, 10.0: 27.11}
    quality = [
        {
            "series": "unconditional",
            "x": s,
            "fid": f,
            "fid_sd": 0.6,
            "precision": 0.5 + s / 100,
            "recall": 0.7 - s / 100,
        }
        for s, f in fid.items()
    ] + [{"series": "conditional", "x": s, "fid": 30.0 - s, "fid_sd": 0.6} for s in fid]
    part = GUIDANCE.check(Results(quality, {}, {}, None)).parts[2]
    assert not part.holds and part.within_noise
    assert part.text == (
        "unconditional: best FID at a moderate scale (at s = 0) "
        "(within the noise: 2 sd of the difference = 1.70)"
    )
    quality[2]["fid"] = 20.0  # s = 3 clearly best
    part = GUIDANCE.check(Results(quality, {}, {}, None)).parts[2]
    assert part.holds and not part.within_noise


def test_a_precision_difference_within_its_standard_error_is_marked_within_the_noise():
    # Claim 7 in the clean-clone run (2026-12-04), 1,000 samples each: p_uncond 0.5's
    # precision fell from 0.548 to 0.512 between w = 0 and 3, p_uncond 0.1's rose from 0.547
    # to 0.597; the noise of each is the standard error sqrt(p (1 - p) / 1000).
    numbers = {  # (series, w): (FID, precision, recall)
        ("p_uncond 0.1", 0.0): (31.24, 0.547, 0.674),
        ("p_uncond 0.1", 0.5): (27.36, 0.579, 0.651),
        ("p_uncond 0.1", 1.0): (26.13, 0.590, 0.580),
        ("p_uncond 0.1", 3.0): (30.58, 0.597, 0.374),
        ("p_uncond 0.2", 0.0): (30.25, 0.557, 0.670),
        ("p_uncond 0.2", 0.5): (26.65, 0.587, 0.638),
        ("p_uncond 0.2", 1.0): (25.47, 0.607, 0.592),
        ("p_uncond 0.2", 3.0): (29.25, 0.563, 0.434),
        ("p_uncond 0.5", 0.0): (28.54, 0.548, 0.638),
        ("p_uncond 0.5", 0.5): (26.54, 0.561, 0.639),
        ("p_uncond 0.5", 1.0): (26.13, 0.574, 0.598),
        ("p_uncond 0.5", 3.0): (29.81, 0.512, 0.488),
    }
    quality = [
        {
            "series": series,
            "x": w,
            "fid": fid,
            "fid_sd": 0.9,
            "precision": precision,
            "precision_sd": math.sqrt(precision * (1 - precision) / 1000),
            "recall": recall,
            "recall_sd": 0.015,
        }
        for (series, w), (fid, precision, recall) in numbers.items()
    ]
    parts = CFG.check(Results(quality, {}, {}, None)).parts
    precision = {part.text.split(":")[0]: part for part in parts if "precision" in part.text}
    assert not precision["p_uncond 0.5"].holds and precision["p_uncond 0.5"].within_noise
    assert "0.55 < 0.51 (within the noise: 2 sd of the difference = 0.04)" in (
        precision["p_uncond 0.5"].text
    )
    assert precision["p_uncond 0.1"].holds and not precision["p_uncond 0.1"].within_noise
    assert precision["p_uncond 0.2"].holds and precision["p_uncond 0.2"].within_noise
    recall = [part for part in parts if "recall" in part.text]
    assert all(part.holds and not part.within_noise for part in recall)


def test_measured_numbers_carry_their_noise_through_differences_ratios_and_minima():
    a, b = Measured(10.0, 0.3), Measured(4.0, 0.4)
    assert (a - b).value == 6.0 and (a - b).sd == pytest.approx(0.5)
    assert (a - 1).sd == 0.3 and (a / b).value == 2.5
    assert (a / b).sd == pytest.approx(math.hypot(0.3 / 4, 10 * 0.4 / 16))
    assert min(a, b) is b and Measured.of(3).sd == 0.0


def test_bits_per_dim_of_the_same_test_images_are_compared_without_a_noise():
    # Their standard errors over the images (0.1) do not describe a paired difference.
    nll = {"L_simple": {"bpd": 4.17, "stderr": 0.1}, "L": {"bpd": 4.12, "stderr": 0.1}}
    quality = [{**row, "fid_sd": 0.5} for row in rows({"L_simple": {0: 21.8}, "L": {0: 55.6}})]
    verdict = OBJECTIVES.check(Results(quality, nll, {}, None))
    assert verdict.summary() == "holds" and verdict.parts[1].text.endswith("4.12 < 4.17")


def test_the_article_check_holds_on_its_findings_and_fails_reversed():
    # the article's findings as numbers: two residual blocks best, attention about the
    # same, DDIM with 100 steps the best way to sample
    lowest = {
        "res-conv": 30.0,
        "res": 28.0,
        "res-res": 22.0,
        "res-res-atn": 21.5,
        "res-large": 26.0,
    }
    curves = {variant: {"lowest": fid} for variant, fid in lowest.items()}
    ways = {
        "res-res, DDPM": {100: 25.0, 1000: 23.0},
        "res-res, DDIM eta 0": {100: 20.0, 1000: 24.0},
    }
    verdict = ARTICLE.check(Results(rows(ways), {}, curves, None))
    assert verdict.holds, verdict.parts
    assert verdict.parts[0].text == (
        "lowest FID while training, two residual blocks below one: 21.50 < 26.00"
    )
    reversed_lowest = {**lowest, "res-res": 40.0, "res-res-atn": 30.0}
    reversed_ways = {
        "res-res, DDPM": {100: 25.0, 1000: 19.0},
        **{"res-res, DDIM eta 0": {100: 20.0, 1000: 18.0}},
    }
    curves = {variant: {"lowest": fid} for variant, fid in reversed_lowest.items()}
    verdict = ARTICLE.check(Results(rows(reversed_ways), {}, curves, None))
    assert [part.holds for part in verdict.parts] == [False, False, False, True, False]


def test_the_objectives_check_reads_fid_and_bits_per_dim():
    quality = rows({"L_simple": {0: 3.17}, "L": {0: 13.51}})
    nll = {"L_simple": {"bpd": 3.75}, "L": {"bpd": 3.70}}
    assert OBJECTIVES.check(Results(quality, nll, {}, None)).holds  # DDPM Tables 1-2
    nll = {"L_simple": {"bpd": 3.70}, "L": {"bpd": 3.75}}
    verdict = OBJECTIVES.check(Results(quality, nll, {}, None))
    assert [part.holds for part in verdict.parts] == [True, False]


def test_the_rate_distortion_check_on_ddpm_table_4():
    # DDPM Table 4 (CIFAR-10): reverse time, rate (bits/dim), distortion (RMSE, [0, 255])
    table = [
        (100, 0.00000, 67.60125), (200, 0.00013, 60.97170), (300, 0.00081, 54.18826),
        (400, 0.00282, 46.12765), (500, 0.00716, 38.03236), (600, 0.01507, 30.80948),
        (700, 0.02866, 24.43656), (800, 0.05415, 18.47482), (900, 0.11994, 12.02277),
        (1000, 1.77581, 0.95136),
    ]  # fmt: skip
    lossy = [{"step": 1000 - t, "rate": rate, "distortion": d} for t, rate, d in table]
    # the last row's rate is the whole bound: section 4.3's rate 1.78 + distortion 1.97
    lossless = {"step": -1, "rate": 3.75, "distortion": 0.0}
    results = Results([], {"fashion 28x28": {"rate_distortion": [*lossy, lossless]}}, {}, None)
    verdict = FIGURES.check(results)
    assert verdict.holds, verdict.parts  # 12.0 < 67.6 / 5 at 0.12 of the 3.75 bits/dim
    assert "0.12 < 1.88" in verdict.parts[0].text


def test_step_noise_is_the_relative_noise_of_a_per_step_estimate_without_its_trend():
    generator = np.random.default_rng(0)
    flat = 10 + generator.normal(size=4000)
    falling = flat + np.linspace(5, 0, 4000)  # a slow trend leaves the figure as it is
    assert step_noise(flat) == pytest.approx(0.1, rel=0.05)  # sigma 1 over mean 10
    assert step_noise(falling) == pytest.approx(step_noise(flat) * 10 / 12.5, rel=0.05)
    assert np.isnan(step_noise([1.0, 2.0]))


def test_every_check_reads_only_what_its_claim_measures():
    """Each declared check, on made-up results holding exactly the claim's measurements,
    gives a verdict whose parts state their numbers."""
    generator = np.random.default_rng(0)
    for claim in CLAIMS.values():
        quality = [
            {"series": p.series, "x": p.x, "fid": generator.uniform(5, 50),
             "precision": generator.uniform(), "recall": generator.uniform()}
            for p in claim.quality
        ]  # fmt: skip
        rate_distortion = [
            {"step": step, "rate": 1 - step / 1000, "distortion": step / 4}
            for step in (999, 500, 0, -1)
        ]
        likelihood = {
            item.series: {"bpd": generator.uniform(3, 5), "rate_distortion": rate_distortion}
            for item in claim.likelihood
        }
        curves = {
            item.series: {"noise": generator.uniform(), "lowest": generator.uniform(5, 50)}
            for item in claim.curves
        }
        verdict = claim.check(Results(quality, likelihood, curves, None))
        assert verdict.parts and all(part.text for part in verdict.parts), claim.name
        failed = sum(not part.holds for part in verdict.parts)
        expected = f"does not hold ({failed} of {len(verdict.parts)} parts fail)"
        assert verdict.summary() == ("holds" if failed == 0 else expected), claim.name
