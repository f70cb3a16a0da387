"""``diffuse figures progressive|completions|interpolate CKPT --out FIG.png``: the figures
of the DDPM and DDIM papers from a trained model, as labelled PNG grids.

- progressive:  predicted x0 along the reverse process (DDPM Fig. 6).
- completions:  stochastic completions of one latent x_t at several t (DDPM Fig. 7).
- interpolate:  --method ddpm: two images (--images A B, or two samples) mixed through x_t
                at each t of --at (DDPM Figs. 8, 9); --method ddim: slerp of the latents x_T
                of two seeds, decoded deterministically (DDIM Fig. 6).

Timesteps are the papers' t = 1 .. T, snapped to the steps the sampler walks (--steps).
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffuse.cli.common import add_command
from diffuse.cli.sample import add_model_arguments, load_base, parse_integers, print_spacing
from diffuse.diffusion import seeded_generators
from diffuse.errors import ConfigError
from diffuse.outputs import check_output_file
from diffuse.rendering import save_png
from diffuse.sample import completions, interpolation, latent_interpolation, progressive
from diffuse.sample.figures import read_image
from diffuse.sample.pipeline import check_request, sample_labels


def parse_timesteps(text: str) -> list[int]:
    """``"1000,500,250"`` -> [1000, 500, 250]."""
    values = parse_integers(text, "--at")
    if not values:
        raise ConfigError("--at names no timestep")
    return values


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "figures",
        "the papers' figures: progressive generation, completions, interpolation",
        __doc__,
    )
    figures = parser.add_subparsers(
        dest="figure", metavar="FIGURE", required=True, help="the figure to draw"
    )

    progressive_parser = add_command(
        figures, "progressive", "predicted x0 over the chain (DDPM Fig. 6)", __doc__
    )
    add_model_arguments(progressive_parser, default_sampler="ddpm")
    progressive_parser.add_argument("--n", type=int, default=4, help="samples (rows)")
    progressive_parser.add_argument("--columns", type=int, default=10, help="steps shown")

    completions_parser = add_command(
        figures, "completions", "completions of one latent x_t (DDPM Fig. 7)", __doc__
    )
    add_model_arguments(completions_parser, default_sampler="ddpm")
    completions_parser.add_argument("--at", default="1000,750,500,250", help="t of each row")
    completions_parser.add_argument("--k", type=int, default=4, help="completions per row")

    interpolate_parser = add_command(
        figures,
        "interpolate",
        "interpolation of two images (DDPM Figs. 8, 9; DDIM Fig. 6)",
        __doc__,
    )
    add_model_arguments(interpolate_parser, default_sampler="ddpm")
    interpolate_parser.add_argument(
        "--method",
        default="ddpm",
        choices=("ddpm", "ddim"),
        help="ddpm: mix two images through x_t; ddim: slerp two seeds' latents x_T",
    )
    interpolate_parser.add_argument("--at", default="250,500", help="ddpm: t of each row")
    interpolate_parser.add_argument("--lambdas", type=int, default=9, help="mixes per row")
    interpolate_parser.add_argument("--images", nargs=2, metavar=("A", "B"), help="ddpm: sources")
    interpolate_parser.add_argument("--pairs", type=int, default=2, help="ddim: rows")

    for sub in (progressive_parser, completions_parser, interpolate_parser):
        sub.add_argument("--out", type=Path, required=True, help="the PNG file to write")
        sub.set_defaults(func=run)


def run(args) -> int:
    check_output_file(args.out, args.overwrite, ".png")
    base = load_base(args)
    stage, classes = base.stage, base.classes
    check_request(stage, 1, classes=classes)
    print_spacing(stage.sampler)
    progress = not args.no_progress
    if args.figure == "progressive":
        figure = progressive(
            stage, args.n, seed=args.seed, classes=classes, columns=args.columns, progress=progress
        )
    elif args.figure == "completions":
        figure = completions(
            stage,
            parse_timesteps(args.at),
            k=args.k,
            seed=args.seed,
            classes=classes,
            progress=progress,
        )
    else:
        figure = _interpolation(args, stage, classes, progress)
    save_png(args.out, figure.render())
    print(f"{args.figure} figure written to {args.out}")
    return 0


def _interpolation(args, stage, classes, progress):
    if classes is not None and len(classes) > 1:
        raise ConfigError("an interpolation decodes with one class: give one --classes value")
    generators = seeded_generators([args.seed, args.seed + 1])
    labels = sample_labels(stage, generators, 0, classes)
    label = None if labels is None else int(labels[0])
    if args.method == "ddim":
        if args.images is not None:
            raise ConfigError("--images is for --method ddpm; ddim interpolates seeds' latents")
        return latent_interpolation(
            stage, args.pairs, lambdas=args.lambdas, seed=args.seed, label=label, progress=progress
        )
    at = parse_timesteps(args.at)
    if args.images is not None:
        image_a, image_b = (read_image(path, stage) for path in args.images)
    else:
        pair_labels = None if labels is None else torch.full((2,), label, dtype=torch.long)
        image_a, image_b = stage.sample(generators, pair_labels, progress=progress).cpu()
    return interpolation(
        stage,
        image_a,
        image_b,
        at,
        lambdas=args.lambdas,
        seed=args.seed,
        label=label,
        progress=progress,
    )
