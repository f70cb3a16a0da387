"""``diffuse nll CKPT --data NAME``: negative log-likelihood in bits/dim and rate-distortion.

Evaluates the full variational bound (DDPM eq. 5) of the first N images of a data set's
split under a trained diffusion model, with one network evaluation per timestep and
image (T evaluations per image: 1000 for most models), and reports the mean and its
standard error. The same terms give DDPM's rate-distortion curve (Table 4, Fig. 5).

Writes to OUT: nll.json (the figures, and each image's bits/dim), rate_distortion.csv
(reverse-process time, rate in bits/dim, distortion as RMSE on [0, 255]) and
rate_distortion.png.
"""

from __future__ import annotations

import csv
import io

import torch

from diffuse.checkpoint import load_checkpoint
from diffuse.cli.common import add_command, add_device_option, add_progress_option
from diffuse.data import load_dataset
from diffuse.devices import resolve_device
from diffuse.errors import CheckpointError, ConfigError
from diffuse.eval.nll import dataset_nll
from diffuse.io import atomic_directory, atomic_write_json, atomic_write_text
from diffuse.outputs import OutputLayout
from diffuse.plots import plot_rate_distortion

# Rows of DDPM Table 4 (reverse-process times) shown on the terminal.
TABLE_TIMES = (1, 10, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950, 975, 1000)
LAYOUT = OutputLayout(
    "nll folder", "nll.json", ("nll.json", "rate_distortion.csv", "rate_distortion.png")
)


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "nll", "bits/dim (variational bound) and rate-distortion of a data set", __doc__
    )
    parser.add_argument("checkpoint", help="checkpoint folder, or a training run's folder")
    parser.add_argument("--data", required=True, help="data set name or image folder")
    parser.add_argument("--data-dir", help="where the data set's files are (see diffuse train)")
    parser.add_argument("--split", default="test", help="train or test")
    parser.add_argument("--n", type=int, default=256, help="number of images")
    parser.add_argument("--batch-size", type=int, default=64, help="images per network call")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    parser.add_argument(
        "--unconditional",
        action="store_true",
        help="for a class-conditional model trained with a null class: the likelihood "
        "without labels (default: conditional on each image's label)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier nll folder (never a folder holding other files)",
    )
    add_device_option(parser)
    add_progress_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.n < 1 or args.batch_size < 1:
        raise ConfigError("--n and --batch-size must be positive")
    LAYOUT.check(args.out, args.overwrite)
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(args.checkpoint, device=device)
    model, config = checkpoint.model, checkpoint.model.config
    if config.kind != "unet" or checkpoint.diffusion is None:
        raise CheckpointError(
            f"{checkpoint.path} holds a {config.kind} network"
            + ("" if checkpoint.diffusion is None else " (an upsampler)")
            + "; nll needs a diffusion model with its diffusion settings"
        )
    if args.unconditional and not config.null_class:
        raise ConfigError(
            "--unconditional needs a model trained with a null class (classifier-free "
            "guidance); this one has none"
        )
    dataset = load_dataset(
        args.data,
        split=args.split,
        image_size=config.image_size,
        data_dir=args.data_dir,
        class_cond=config.num_classes is not None,
        progress=not args.no_progress,
    )
    if dataset.channels != config.in_channels:
        raise ConfigError(
            f"{dataset.name} has {dataset.channels}-channel images; the model takes "
            f"{config.in_channels}"
        )
    n = min(args.n, len(dataset))
    images, labels = dataset.tensors()
    images, labels = images[:n], labels[:n]
    if config.num_classes is None:
        labels = None
    elif args.unconditional:
        labels = torch.full_like(labels, config.num_classes)
    with atomic_directory(args.out, LAYOUT, overwrite=args.overwrite) as out:
        result = dataset_nll(
            model,
            checkpoint.diffusion.build(),
            images,
            labels,
            batch_size=args.batch_size,
            generator=torch.Generator().manual_seed(args.seed),
            progress=not args.no_progress,
        )
        rows = result.pop("rate_distortion")
        summary = {
            **checkpoint.record(),
            "data": dataset.name,
            "split": dataset.split,
            "conditional": labels is not None and not args.unconditional,
            "seed": args.seed,
            **result,
        }
        atomic_write_json(out / "nll.json", summary)
        atomic_write_text(out / "rate_distortion.csv", _csv(rows))
        plot_rate_distortion(out / "rate_distortion.png", rows)
    _print_summary(summary, rows, args.out)
    return 0


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["reverse_time", "step", "rate", "distortion"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _print_summary(summary: dict, rows: list[dict], out: str) -> None:
    print(
        f"{summary['data']} {summary['split']}, {summary['n']} images: "
        f"{summary['bpd']:.4f} ± {summary['stderr']:.4f} bits/dim "
        f"(prior {summary['prior']:.2e}, decoder L_0 {summary['decoder']:.4f})"
    )
    T = rows[0]["reverse_time"] + rows[0]["step"]
    wanted = {round(time * T / 1000) for time in TABLE_TIMES}
    print(f"{'reverse time':>12}  {'rate (bits/dim)':>15}  {'distortion (RMSE)':>17}")
    for row in rows:
        if row["step"] >= 0 and row["reverse_time"] in wanted:
            print(f"{row['reverse_time']:>12}  {row['rate']:>15.5f}  {row['distortion']:>17.5f}")
    print(f"wrote {out}/nll.json, rate_distortion.csv, rate_distortion.png")
