"""``diffuse convert openai IN.pt OUT_DIR --preset NAME`` and ``diffuse convert diffusers IN_DIR
OUT_DIR``: import checkpoints of other implementations."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffuse import presets
from diffuse.cli.common import add_command
from diffuse.convert import convert_openai_checkpoint
from diffuse.errors import ConfigError, MissingFileError
from diffuse.interop import convert_diffusers_folder
from diffuse.io import read_json

OPENAI_DOC = """Convert a checkpoint released with openai/guided-diffusion or
openai/improved-diffusion (a plain state dict, read without unpickling code) into a
diffuse checkpoint folder with its configuration and diffusion settings. Every tensor of
the file must be used and every parameter filled. --overwrite replaces an earlier
checkpoint folder, never a folder that holds anything else."""

DIFFUSERS_DOC = """Convert a diffusers pipeline folder (as save_pretrained or `diffuse export
diffusers` writes it: unet/ with a UNet2DModel, scheduler/ with a DDPMScheduler or
DDIMScheduler) into a diffuse checkpoint folder: the weights (safetensors only), the
network's settings and the diffusion settings (schedule, prediction, variance; none
without scheduler/). A folder exported by diffuse comes back exactly (its diffuse.json
keeps the null class, the loss and the metadata). Settings diffuse cannot reproduce are
refused with each one named. Needs diffusers: pip install 'diffuse[diffusers]'."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "convert",
        "import checkpoints of other implementations",
        "Import checkpoints of other implementations into diffuse's format.",
    )
    sources = parser.add_subparsers(
        dest="source", metavar="SOURCE", required=True, help="where the checkpoint comes from"
    )
    openai = add_command(
        sources,
        "openai",
        "a released guided-diffusion / improved-diffusion .pt file",
        OPENAI_DOC,
    )
    openai.add_argument("input", type=Path, help="the released .pt file")
    openai.add_argument("output", type=Path, help="the checkpoint folder to write")
    which = openai.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--preset",
        choices=presets.names(),
        metavar="NAME",
        help="the preset the file belongs to, e.g. adm-imagenet64 (see diffuse.presets)",
    )
    which.add_argument(
        "--reference-config",
        type=Path,
        metavar="JSON",
        help='a JSON file {"kind": ..., "constructor": {reference keyword arguments}}',
    )
    openai.add_argument(
        "--timestep-scale",
        type=float,
        default=1.0,
        help="with --reference-config: 1000/T for models trained with rescale_timesteps",
    )
    openai.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier checkpoint folder (never a folder holding other files)",
    )
    openai.set_defaults(func=run_openai)
    diffusers = add_command(
        sources, "diffusers", "a diffusers pipeline folder (UNet2DModel)", DIFFUSERS_DOC
    )
    diffusers.add_argument("input", type=Path, help="the pipeline folder (unet/, scheduler/)")
    diffusers.add_argument("output", type=Path, help="the checkpoint folder to write")
    diffusers.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier checkpoint folder (never a folder holding other files)",
    )
    diffusers.set_defaults(func=run_diffusers)


def run_openai(args: argparse.Namespace) -> int:
    reference = None
    if args.reference_config is not None:
        reference = _read_json(args.reference_config)
    path = convert_openai_checkpoint(
        args.input,
        args.output,
        preset=args.preset,
        reference=reference,
        timestep_scale=args.timestep_scale,
        overwrite=args.overwrite,
    )
    print(f"wrote {path}")
    return 0


def run_diffusers(args: argparse.Namespace) -> int:
    path = convert_diffusers_folder(args.input, args.output, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist")
    return read_json(path, ConfigError)
