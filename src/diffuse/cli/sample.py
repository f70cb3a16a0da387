"""``diffuse sample CKPT --n N --out DIR``: draw samples from a trained diffusion model.

CKPT is a checkpoint folder or a training run's folder (its latest checkpoint; EMA weights
preferred). Writes DIR/samples.npz (arr_0: uint8 NHWC images, arr_1: labels), DIR/grid.png,
DIR/images/NNNNNN.png and DIR/info.json. Sample i uses the seed --seed + i, so it is the
same whatever --batch-size.

Samplers: ddpm (ancestral), ddim (--eta), dpm++2m (DPM-Solver++(2M)). Below 50 steps use
--sampler dpm++2m --steps quadN (quadratic spacing; never dpm++2m with evenly spaced
steps); from 50 steps on every sampler does as well. Guidance: --cfg W (classifier-free, Ho & Salimans'
w: 0 is conditional sampling; diffusers' scale is 1 + W), optionally only on a noise-level
interval (--cfg-interval); --classifier CKPT --classifier-scale S (ADM). Upsampling:
--upsampler CKPT with its own --upsampler-sampler/--upsampler-steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from diffuse.cli.common import add_command, add_device_option, add_progress_option, resolve_device
from diffuse.errors import ConfigError
from diffuse.sample import (
    SAMPLERS,
    SamplerSettings,
    Stage,
    check_request,
    generate,
    load_classifier,
    load_diffusion_model,
    save_samples,
)
from diffuse.sample.output import check_output


def parse_integers(text: str, option: str) -> list[int]:
    """``"1,2,7"`` -> [1, 2, 7], or a :class:`ConfigError` naming ``option``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated integers, got {text!r}") from None


def parse_classes(text: str | None) -> list[int] | None:
    """The labels of ``--classes``; None stays None."""
    return None if text is None else parse_integers(text, "--classes")


def add_model_arguments(parser: argparse.ArgumentParser, *, default_sampler: str = "ddim") -> None:
    """The options that pick a model and how to sample it (shared with ``diffuse figures``)."""
    parser.add_argument("checkpoint", help="checkpoint folder, or a run folder (latest checkpoint)")
    parser.add_argument(
        "--weights", default="auto", help="auto (EMA if saved), model or ema_<rate>"
    )
    parser.add_argument("--sampler", default=default_sampler, choices=SAMPLERS)
    parser.add_argument(
        "--steps", default="50", help="respacing: 50, ddim50, quad50 or counts per section 10,15,20"
    )
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (ddim only)")
    parser.add_argument("--no-clip", action="store_true", help="do not clip predicted x0")
    parser.add_argument("--classes", help="comma-separated labels, used in turn (default: random)")
    parser.add_argument("--cfg", type=float, help="classifier-free guidance weight w (scale 1 + w)")
    parser.add_argument(
        "--cfg-interval",
        type=float,
        nargs=2,
        metavar=("SIGMA_LOW", "SIGMA_HIGH"),
        help="guide only at noise levels sigma = sqrt((1 - abar) / abar) in (LOW, HIGH]",
    )
    parser.add_argument("--classifier", help="noisy classifier checkpoint (classifier guidance)")
    parser.add_argument("--classifier-scale", type=float, default=1.0, help="classifier scale s")
    parser.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED + i")
    add_device_option(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_progress_option(parser)


def device_of(args) -> torch.device:
    """The device of ``--device`` (CUDA when available by default)."""
    return resolve_device(args.device)


def base_stage(args) -> Stage:
    """Load the model (and classifier) the arguments name, checked for the request."""
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.classifier is None and args.classifier_scale != 1.0:
        raise ConfigError("--classifier-scale needs --classifier")
    settings = SamplerSettings(args.sampler, args.steps, args.eta, not args.no_clip)
    device = device_of(args)
    loaded = load_diffusion_model(args.checkpoint, weights=args.weights, device=device)
    classifier = None
    if args.classifier is not None:
        classifier = load_classifier(args.classifier, loaded.diffusion, device=device)
    stage = Stage(
        loaded.model,
        loaded.diffusion,
        settings,
        cfg=args.cfg,
        cfg_interval=None if args.cfg_interval is None else tuple(args.cfg_interval),
        classifier=classifier,
        classifier_scale=args.classifier_scale,
    )
    return stage


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "sample", "draw samples (PNGs, grid, .npz) from a diffusion model", __doc__
    )
    add_model_arguments(parser)
    parser.add_argument("--n", type=int, default=16, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per batch")
    parser.add_argument("--upsampler", help="upsampler checkpoint (ADM two-stage sampling)")
    parser.add_argument("--upsampler-weights", default="auto")
    parser.add_argument("--upsampler-sampler", default="ddim", choices=SAMPLERS)
    parser.add_argument("--upsampler-steps", default="50")
    parser.add_argument("--upsampler-eta", type=float, default=0.0)
    parser.set_defaults(func=run)


def run(args) -> int:
    check_output(args.out, args.overwrite)
    classes = parse_classes(args.classes)
    base = base_stage(args)
    upsampler = None
    if args.upsampler is not None:
        settings = SamplerSettings(
            args.upsampler_sampler, args.upsampler_steps, args.upsampler_eta, not args.no_clip
        )
        loaded = load_diffusion_model(
            args.upsampler, upsampler=True, weights=args.upsampler_weights, device=base.device
        )
        upsampler = Stage(loaded.model, loaded.diffusion, settings)
    check_request(base, args.n, classes=classes, batch_size=args.batch_size, upsampler=upsampler)
    samples = generate(
        base,
        args.n,
        seed=args.seed,
        classes=classes,
        batch_size=args.batch_size,
        upsampler=upsampler,
        progress=not args.no_progress,
    )
    info = {
        "checkpoint": str(args.checkpoint),
        "weights": args.weights,
        "sampler": args.sampler,
        "steps": args.steps,
        "eta": args.eta,
        "clip_denoised": not args.no_clip,
        "classes": classes,
        "cfg": args.cfg,
        "cfg_interval": args.cfg_interval,
        "classifier": args.classifier,
        "classifier_scale": args.classifier_scale if args.classifier else None,
        "upsampler": args.upsampler,
        "upsampler_sampler": args.upsampler_sampler if args.upsampler else None,
        "upsampler_steps": args.upsampler_steps if args.upsampler else None,
        "seed": args.seed,
        "seeds": f"sample i uses seed {args.seed} + i",
    }
    save_samples(args.out, samples, overwrite=args.overwrite, info=info)
    shape = "x".join(map(str, samples.images.shape[1:]))
    print(f"{len(samples.images)} samples ({shape}) written to {args.out}")
    return 0
