"""``diffuse neighbors SAMPLES --data NAME --out FIG.png``: the nearest training images of
samples, the memorization check of DDPM Figs. 12 and 15.

Each of the first --n-samples samples is shown in the first column, followed by its --k
nearest images of the data set's split by Euclidean distance: between pixel values
(--space pixel) or between the FID Inception's pool_3 features (--space inception, whose
data set features are computed once and cached, as for ``diffuse eval``). The data are
loaded at the samples' resolution and channel count.

SAMPLES is an .npz (arr_0: uint8 [N, H, W, C]), an .npy, a folder of images or an output
folder of ``diffuse sample``. --out FIG.png writes the figure; --out DIR writes
DIR/neighbors.png and DIR/neighbors.json (the indices and distances).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuse.cli.common import add_command, add_device_option, add_progress_option
from diffuse.data import load_dataset
from diffuse.devices import resolve_device
from diffuse.errors import ConfigError, DataError
from diffuse.eval.features import InceptionExtractor
from diffuse.eval.neighbors import SPACES, match_channels, nearest_vectors, neighbor_figure
from diffuse.eval.reference import dataset_reference
from diffuse.eval.samples import load_samples
from diffuse.io import atomic_directory, atomic_write_json
from diffuse.outputs import OutputLayout, check_output_file
from diffuse.rendering import save_png

FIGURE_FILE = "neighbors.png"
TABLE_FILE = "neighbors.json"
LAYOUT = OutputLayout("neighbors folder", TABLE_FILE, (FIGURE_FILE, TABLE_FILE))


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "neighbors",
        "nearest training images of samples (pixel or Inception space)",
        __doc__,
    )
    parser.add_argument("samples", help=".npz (arr_0 uint8 NHWC), .npy or folder of images")
    parser.add_argument("--data", required=True, help="data set name or image folder")
    parser.add_argument("--split", default="train", help="train or test")
    parser.add_argument("--space", default="pixel", choices=SPACES, help="distance space")
    parser.add_argument("--k", type=int, default=5, help="neighbours per sample")
    parser.add_argument("--n-samples", type=int, default=8, help="first samples shown (rows)")
    parser.add_argument("--n-data", type=int, help="search the first N images (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="FIG.png, or a folder")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier figure or neighbors folder (never a folder holding other files)",
    )
    parser.add_argument("--inception-weights", help="Inception weights file (--space inception)")
    parser.add_argument("--cache-dir", help="reference features cache (~/.cache/diffuse/ref)")
    add_device_option(parser)
    add_progress_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    for name in ("k", "n_samples", "n_data"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    _check_output(args.out, args.overwrite)
    device = resolve_device(args.device)
    progress = not args.no_progress
    samples = load_samples(args.samples)[: args.n_samples]
    height, width = samples.shape[1:3]
    if height != width:
        raise DataError(
            f"the samples are {height}x{width}; neighbours are searched in a data set of "
            "square images: give square samples"
        )
    data = load_dataset(
        args.data, split=args.split, image_size=height, class_cond=False, progress=progress
    )
    n_data = len(data) if args.n_data is None else args.n_data
    if not args.k <= n_data <= len(data):
        raise ConfigError(
            f"{data.name} {data.split} has {len(data)} images: --n-data must lie in "
            f"{args.k} (--k) .. {len(data)}"
        )
    channels = 1 if samples.ndim == 3 else samples.shape[3]
    if args.space == "pixel":
        references = match_channels(data.uint8(range(n_data)), channels)
        indices, distances = nearest_vectors(
            samples, references, args.k, device=device, progress=progress
        )
        neighbors = references[indices.ravel()]
    else:
        extractor = InceptionExtractor(args.inception_weights, device=device)
        reference = dataset_reference(
            args.data,
            metrics=("pr",),  # the pool_3 features themselves
            split=args.split,
            n=args.n_data,
            image_size=height,
            extractor=extractor,
            cache_dir=args.cache_dir,
            progress=progress,
        )
        features = extractor(samples, progress=progress).pool
        indices, distances = nearest_vectors(
            features, reference.features, args.k, device=device, progress=progress
        )
        neighbors = match_channels(data.uint8(indices.ravel()), channels)
    figure = neighbor_figure(samples, neighbors.reshape(*indices.shape, *neighbors.shape[1:]))
    table = {
        "samples": str(args.samples),
        "data": data.name,
        "split": data.split,
        "n_data": n_data,
        "space": args.space,
        "distance": "L2 of 0..255 pixel values" if args.space == "pixel" else "L2 of pool_3",
        "neighbors": indices.tolist(),
        "distances": distances.tolist(),
    }
    _write(args.out, args.overwrite, figure.render(), table)
    _print_table(indices, distances)
    print(f"wrote {args.out}")
    return 0


def _is_figure_file(out: Path) -> bool:
    return out.suffix.lower() == ".png"


def _check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output that may not be written or replaced, before any work."""
    if _is_figure_file(out):
        check_output_file(out, overwrite, ".png")
    else:
        LAYOUT.check(out, overwrite)


def _write(out: Path, overwrite: bool, image: np.ndarray, table: dict) -> None:
    if _is_figure_file(out):
        save_png(out, image)
        return
    with atomic_directory(out, LAYOUT, overwrite=overwrite) as folder:
        save_png(folder / FIGURE_FILE, image)
        atomic_write_json(folder / TABLE_FILE, table)


def _print_table(indices: np.ndarray, distances: np.ndarray) -> None:
    print("sample  nearest data images (index: distance)")
    for i, (row, lengths) in enumerate(zip(indices, distances, strict=True)):
        cells = ", ".join(f"{j}: {d:.1f}" for j, d in zip(row, lengths, strict=True))
        print(f"{i:>6}  {cells}")
