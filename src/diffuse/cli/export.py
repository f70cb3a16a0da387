"""``diffuse export diffusers CKPT OUT_DIR``: a checkpoint as a diffusers pipeline folder."""

from __future__ import annotations

import argparse

from diffuse.cli.common import add_command
from diffuse.interop import export_diffusers

DIFFUSERS_DOC = """Write a checkpoint as a diffusers pipeline folder: model_index.json, unet/ (a
UNet2DModel) and scheduler/ (a DDPMScheduler with the checkpoint's schedule, prediction
and variance, clip_sample=True and "leading" timesteps), plus diffuse.json (the exact
settings and metadata, for `diffuse convert diffusers`). DDPMPipeline.from_pretrained(OUT)
and DDIMPipeline.from_pretrained(OUT) load it; DDIM with N steps visits the timesteps of
`diffuse sample --sampler ddim --steps ddimN` when N divides T (pass
use_clipped_model_output=True to derive the noise from the clipped x0 as diffuse does).
A class-conditional model takes class_labels (its null class, when it has one, is label
num_classes). Networks or settings UNet2DModel cannot express are refused with each one
named, and nothing is written. Needs diffusers: pip install 'diffuse[diffusers]'."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "export",
        "write checkpoints in other libraries' formats",
        "Write checkpoints in other libraries' formats.",
    )
    targets = parser.add_subparsers(
        dest="target", metavar="FORMAT", required=True, help="the format to write"
    )
    diffusers = add_command(targets, "diffusers", "a diffusers pipeline folder", DIFFUSERS_DOC)
    diffusers.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest)")
    diffusers.add_argument("output", help="the folder to write")
    diffusers.add_argument(
        "--weights",
        default="auto",
        help="auto (the EMA weights of the largest rate if saved, else model), model or ema_<rate>",
    )
    diffusers.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export (never a folder holding other files)",
    )
    diffusers.set_defaults(func=run_diffusers)


def run_diffusers(args: argparse.Namespace) -> int:
    path = export_diffusers(
        args.checkpoint, args.output, weights=args.weights, overwrite=args.overwrite
    )
    what = (
        "pipeline"
        if (path / "model_index.json").is_file()
        else "UNet2DModel (no diffusion settings)"
    )
    print(f"wrote {path}: a diffusers {what}")
    return 0
