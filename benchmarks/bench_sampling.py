"""Sampling speed: our DDIM-50 against diffusers' DDIMScheduler driving the same U-Net weights.

Each stack samples with its own network holding the same weights: ours is a
class-conditional U-Net with a null class from a preset (random weights), diffusers' is the
``UNet2DModel`` built as the same architecture with those weights copied in
(``diffusers_twin.py``; the two networks agree to float rounding). diffusers' loop is the
one of its pipelines: ``scheduler.step`` on the output of one forward pass, with the
conditional and unconditional halves in one batch of twice the size for guidance
(StableDiffusionPipeline's pattern). The two runs start from the same x_T on the same
schedule (our betas as the scheduler's ``trained_betas``, DDIM's leading spacing = our
``ddim50``, clipping on both, with diffusers' ``use_clipped_model_output`` so that eps is
recomputed from the clipped x0 as in DDIM and guided-diffusion), so their images must
agree; the script checks it.

It prints images/s for DDIM-50 without and with CFG, the ratio ours / diffusers (>= 1
means we are at least as fast), and what the guidance interval of Kynkaanniemi et al.
2024 saves: CFG only where sigma = sqrt((1 - abar) / abar) is in (0.28, 5.42] (their
interval for EDM2), the unconditional branch skipped elsewhere. Variants run in
interleaved rounds (the order reversed every other round) so that load from other
processes falls on all alike. Both wall time and the process's CPU time are taken: on a
shared or virtual machine the wall time of one thread swings by 20 % with what others
run, its CPU time far less. A speed ratio is the median over rounds of the paired ratio
(each stack timed side by side in one round), in CPU time and in wall time.
Last, the loops alone: both loops driving a network that costs nothing (x -> 0.1 x), in
milliseconds per step. Needs diffusers (dev only: ``pip install --no-deps diffusers`` plus
huggingface_hub, regex, requests, importlib_metadata).

    .venv/bin/python benchmarks/bench_sampling.py                      # digits preset
    .venv/bin/python benchmarks/bench_sampling.py --preset fashion --batch-size 16
    .venv/bin/python benchmarks/bench_sampling.py --device cuda --autocast bf16
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from bench_unet import output_of, randomized
from benchlib import describe_machine
from diffuse import presets
from diffuse.diffusion import ddim_sample, seeded_generators
from diffuse.diffusion.guidance import (
    ClassifierFreeGuidance,
    guidance_interval,
    guidance_scale_to_weight,
)
from diffuse.nn import build_network
from diffuse.sample import SamplerSettings, Stage
from diffusers_twin import diffusers_twin

INTERVAL = (0.28, 5.42)


def diffusers_ddim(unet, x_T, labels, *, betas, scale: float | None, steps: int, null_class: int):
    """DDIM sampling as diffusers' pipelines do it with ``unet`` (a ``UNet2DModel`` or any
    ``unet(x, t, class_labels=y)``) on the noise schedule ``betas`` (float64 [T], given to
    the scheduler as its ``trained_betas``: the network's own schedule, whatever it is);
    ``scale`` is diffusers' 1 + w."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        num_train_timesteps=len(betas),
        trained_betas=betas,
        clip_sample=True,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(steps)
    x = x_T
    null = torch.full_like(labels, null_class)
    for t in scheduler.timesteps:
        if scale is None:
            eps = output_of(unet(x, t.expand(len(x)).to(x.device), class_labels=labels))
        else:
            both = output_of(
                unet(
                    torch.cat([x, x]),
                    t.expand(2 * len(x)).to(x.device),
                    class_labels=torch.cat([labels, null]),
                )
            )
            cond, uncond = both.chunk(2)
            eps = uncond + scale * (cond - uncond)
        x = scheduler.step(eps, t, x, use_clipped_model_output=True).prev_sample
    return x


def timed(function) -> tuple[float, float, torch.Tensor]:
    """(wall seconds, CPU seconds of this process, result) of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function()
    if result.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="digits", help="a class-conditional preset")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--scale", type=float, default=3.0, help="diffusers' scale (w = scale - 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1 on a shared machine")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", choices=("bf16", "fp16"), help="mixed precision on both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    device = torch.device(args.device)

    preset = presets.get(args.preset)
    model = randomized(build_network(preset.model_config), seed=0).to(device).eval()
    if model.null_class is None:
        raise SystemExit(f"preset {args.preset} has no null class: CFG cannot be measured")
    twin = diffusers_twin(model)
    n = args.batch_size
    generators = seeded_generators(range(n))
    labels = torch.arange(n, device=device) % model.num_classes
    weight = guidance_scale_to_weight(args.scale)
    settings = SamplerSettings("ddim", f"ddim{args.steps}")
    # Both stacks run in the precision of --autocast (fp32 without it): ours is not left
    # to decide for itself ("auto") here.
    stages = {
        "ours": Stage(model, preset.diffusion, settings, precision="fp32"),
        "ours+cfg": Stage(model, preset.diffusion, settings, cfg=weight, precision="fp32"),
        "ours+cfg-interval": Stage(
            model,
            preset.diffusion,
            settings,
            cfg=weight,
            cfg_interval=INTERVAL,
            precision="fp32",
        ),
    }
    x_T = stages["ours"].start_noise(generators)
    precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.autocast)

    def context():
        if precision is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=precision)

    def ours(name):
        def run():
            with context():
                return stages[name].sample(generators, labels, x_T=x_T)

        return run

    def theirs(scale):
        def run():
            with context(), torch.no_grad():
                return diffusers_ddim(
                    twin,
                    x_T,
                    labels,
                    betas=stages["ours"].full_process.betas,
                    scale=scale,
                    steps=args.steps,
                    null_class=model.null_class,
                )

        return run

    variants = {
        "ours": ours("ours"),
        "diffusers": theirs(None),
        "ours+cfg": ours("ours+cfg"),
        "diffusers+cfg": theirs(args.scale),
        "ours+cfg-interval": ours("ours+cfg-interval"),
    }
    for run in variants.values():  # warm-up, and the images to compare
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu_times: dict[str, list[float]] = {name: [] for name in variants}
    images: dict[str, torch.Tensor] = {}
    order = list(variants)
    for round_index in range(args.rounds):
        # Alternate the order so that neither stack always runs right after the other.
        for name in order if round_index % 2 == 0 else reversed(order):
            seconds, cpu_seconds, images[name] = timed(variants[name])
            times[name].append(seconds)
            cpu_times[name].append(cpu_seconds)
    rate = {name: n / statistics.median(values) for name, values in times.items()}
    cpu_rate = {name: n / statistics.median(values) for name, values in cpu_times.items()}

    def paired_ratio(table: dict[str, list[float]], ours_name: str, their_name: str) -> float:
        """Median over rounds of diffusers' time / ours, each pair timed side by side."""
        pairs = zip(table[ours_name], table[their_name], strict=True)
        return statistics.median(theirs / mine for mine, theirs in pairs)

    full = stages["ours"].full_process
    low, high = guidance_interval(full, *INTERVAL)
    kept = stages["ours"].process.timestep_map
    inside = int(((kept >= low) & (kept <= high)).sum())
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"{args.preset}: {parameters:.2f} M parameters, {tuple(x_T.shape[1:])} images, batch "
        f"{n}, DDIM-{args.steps}, {device}, {args.autocast or 'fp32'}, {args.threads} threads, "
        f"medians of {args.rounds} rounds"
    )
    for name in variants:
        print(
            f"  {name:<18} {rate[name]:8.2f} images/s, {cpu_rate[name]:8.2f} images per CPU-second"
        )
    for label, ours_name, their_name in (
        ("no guidance", "ours", "diffusers"),
        (f"CFG (w={weight:g})", "ours+cfg", "diffusers+cfg"),
    ):
        print(
            f"  speed ratio ours / diffusers, {label}: "
            f"{paired_ratio(cpu_times, ours_name, their_name):.3f} in CPU time, "
            f"{paired_ratio(times, ours_name, their_name):.3f} in wall time"
        )
    print(
        f"  guidance interval sigma in {INTERVAL}: {inside} of {len(kept)} steps guided, "
        f"{paired_ratio(cpu_times, 'ours+cfg-interval', 'ours+cfg'):.2f}x the speed of CFG at "
        "every step (CPU time) "
        f"(network rows {len(kept) + inside} instead of {2 * len(kept)}: "
        f"{2 * len(kept) / (len(kept) + inside):.2f}x when the network dominates)"
    )
    for ours_name, their_name in (("ours", "diffusers"), ("ours+cfg", "diffusers+cfg")):
        difference = (images[ours_name].float() - images[their_name].float()).abs().max().item()
        print(f"  max |{ours_name} - {their_name}| = {difference:.2e} (same sampler, same x_T)")
    loop_overhead(stages["ours"], x_T, labels, args)


def loop_overhead(stage: Stage, x_T, labels, args) -> None:
    """Milliseconds per step of each loop around a network that costs nothing."""

    def free(x, t, y=None, class_labels=None):
        return 0.1 * x

    guided = ClassifierFreeGuidance(free, 1.0, null_class=0, channels=x_T.shape[1])
    process, betas = stage.process, stage.full_process.betas
    runs = {
        "ours": lambda: ddim_sample(free, process, x_T, model_kwargs={"y": labels}),
        "diffusers": lambda: diffusers_ddim(
            free, x_T, labels, betas=betas, scale=None, steps=args.steps, null_class=0
        ),
        "ours+cfg": lambda: ddim_sample(guided, process, x_T, model_kwargs={"y": labels}),
        "diffusers+cfg": lambda: diffusers_ddim(
            free, x_T, labels, betas=betas, scale=2.0, steps=args.steps, null_class=0
        ),
    }
    best = {name: min(timed(run)[1] for _ in range(20)) for name, run in runs.items()}
    print(
        "  loop cost per step (CPU ms), free network: "
        + ", ".join(f"{name} {1e3 * seconds / args.steps:.2f}" for name, seconds in best.items())
    )


if __name__ == "__main__":
    main()
