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

from diffuse.cli.common import add_command, add_device_option, add_progress_option
from diffuse.eval.nll import LAYOUT, measure_nll, save_nll
from diffuse.io import atomic_directory

# Rows of DDPM Table 4 (reverse-process times) shown on the terminal.
TABLE_TIMES = (1, 10, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950, 975, 1000)


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
    parser.add_argument(
        "--no-clip",
        action="store_true",
        help="the bound of the unclipped model (default: the predicted x0 clipped to "
        "[-1, 1] in every reverse step, as the model samples and as guided-diffusion's "
        "image_nll measures by default)",
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
    LAYOUT.check(args.out, args.overwrite)
    measurement = measure_nll(
        args.checkpoint,
        args.data,
        split=args.split,
        n=args.n,
        batch_size=args.batch_size,
        seed=args.seed,
        unconditional=args.unconditional,
        clip_denoised=not args.no_clip,
        data_dir=args.data_dir,
        device=args.device,
        progress=not args.no_progress,
    )
    with atomic_directory(args.out, LAYOUT, overwrite=args.overwrite) as out:
        written = save_nll(out, measurement)
    _print_summary(measurement.summary, measurement.rate_distortion)
    print(f"wrote {args.out}/{', '.join(written)}")
    return 0


def _print_summary(summary: dict, rows: list[dict]) -> None:
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
