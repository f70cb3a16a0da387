"""``diffuse eval SAMPLES --ref DATASET_OR_STATS``: FID, KID, sFID, IS and precision/recall.

SAMPLES is an .npz (``arr_0``: uint8 [N, H, W, C]), an .npy or a folder of images. The
reference is a data set name or a folder of images (their statistics are computed once
and cached) or an .npz of statistics: one this command cached, or a guided-diffusion
reference batch.

Samples and reference images alike go to the Inception network at their own size, which
resizes them to 299x299 (the FID convention): the numbers equal those of
``fid(inception_features(load_samples(SAMPLES)), inception_features(reference_images(REF)))``
in Python. --ref-size N instead fits the reference images to NxN as training does (a
named set padded or resized, a folder's images centre-cropped and resized).

KID (Binkowski et al. 2018) is the mean over 100 random subsets of 1000 images of each
set (fewer when a set is smaller) of the unbiased squared MMD with the cubic polynomial
kernel, printed with its standard deviation over the subsets, as torch-fidelity and
clean-fid compute it; it is unbiased, so unlike FID it can be compared across sample
counts. The Inception Score needs weights with the logits layer, which no package ships:
the error of --metrics is says where to download them (--inception-weights).

--noise N adds the noise of FID, precision and recall from this many samples, each a
standard deviation under its number: FID's over N bootstrap resamples of the samples,
precision's the standard error of its per-sample indicators, recall's from N random
halvings of the samples (``diffuse.eval.metrics``). Two numbers whose difference is well
under twice the combined noise are not told apart by this many samples.

The cache holds what the metrics asked for need, keyed by the data set or the folder's
resolved path and checked against a fingerprint of its files: a changed folder is
measured again (for KID it keeps up to 10,000 reference features, a random sample of a
larger set). The command says where statistics were read or written, and which network,
weights and preprocessing made the numbers.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from diffuse.cli.common import (
    add_command,
    add_device_option,
    add_reference_options,
    load_reference,
)
from diffuse.errors import ConfigError
from diffuse.eval.evaluate import METRICS, SmallSampleWarning, evaluate, parse_metrics
from diffuse.eval.features import DEFAULT_BATCH_SIZE, DTYPES, InceptionExtractor
from diffuse.eval.metrics import KID_SUBSET_SIZE, KID_SUBSETS
from diffuse.eval.samples import load_samples
from diffuse.io import atomic_write_json
from diffuse.outputs import check_output_file

LABELS = {
    "fid": "FID",
    "kid": "KID",
    "kid_std": "  (std over {subsets} subsets of {subset_size})",
    "sfid": "sFID",
    "is": "Inception Score",
    "is_std": "  (std over 10 splits)",
    "precision": "precision (k={k})",
    "recall": "recall (k={k})",
    "fid_sd": "  (noise: sd over {noise} bootstrap resamples)",
    "precision_sd": "  (noise: standard error)",
    "recall_sd": "  (noise: sd from {noise} halvings)",
}
ORDER = ("fid", "fid_sd", "kid", "kid_std", "sfid", "is", "is_std")
ORDER += ("precision", "precision_sd", "recall", "recall_sd")


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "eval", "FID, KID, sFID, Inception Score, precision/recall of samples", __doc__
    )
    parser.add_argument("samples", help=".npz (arr_0 uint8 NHWC), .npy or folder of images")
    add_reference_options(parser)
    parser.add_argument(
        "--ref-size",
        type=int,
        help="fit the reference images to NxN as training does (default: their own size)",
    )
    parser.add_argument(
        "--metrics",
        help=f"comma-separated subset of {','.join(METRICS)} (default: all the weights allow)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per network pass"
    )
    add_device_option(parser)
    parser.add_argument(
        "--dtype", default="float32", choices=list(DTYPES), help="the network's precision"
    )
    parser.add_argument("--k", type=int, default=3, help="precision/recall neighbourhood")
    parser.add_argument(
        "--noise",
        type=int,
        default=0,
        metavar="N",
        help="also give the noise of FID, precision and recall from N bootstrap resamples "
        "or halvings of the samples (20 is plenty; default 0: none)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.noise != 0 and args.noise < 2:
        raise ConfigError(f"--noise needs at least 2 resamples (or 0 for none), got {args.noise}")
    if args.json is not None:
        args.json = check_output_file(args.json, args.overwrite, ".json")
    samples = load_samples(args.samples)
    extractor = InceptionExtractor(
        args.inception_weights, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )
    metrics = parse_metrics(args.metrics, extractor.has_logits)
    progress = not args.no_progress
    reference = load_reference(args, metrics, extractor, progress, args.ref_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SmallSampleWarning)
        results = evaluate(
            samples,
            reference,
            metrics=metrics,
            extractor=extractor,
            k=args.k,
            replicates=args.noise,
            progress=progress,
        )
    cautions = []
    for item in caught:
        if issubclass(item.category, SmallSampleWarning):
            cautions.append(str(item.message))
            print(f"diffuse eval: warning: {item.message}", file=sys.stderr)
        else:  # not ours: shown as Python would have shown it
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)
    kid_subsets = None
    if "kid" in results:
        size = min(KID_SUBSET_SIZE, len(samples), len(reference.kid_reference))
        kid_subsets = {"subsets": KID_SUBSETS, "subset_size": size}
        kid_subsets["reference_features"] = len(reference.kid_reference)
    print_table(results, args.k, kid_subsets, args.noise)
    print(f"{len(samples)} samples {list(samples.shape[1:])} from {args.samples}")
    print(f"reference: {reference.describe()}")
    network = extractor.describe()
    print(
        f"network: {network['name']}, {network['weights']}, sha256 {network['sha256'][:16]}, "
        f"{network['dtype']}"
    )
    steps = network["preprocessing"]
    print(
        f"preprocessing: resize to {steps['size']}x{steps['size']}, {steps['resize']}; "
        f"pixels {steps['pixels']}"
    )
    if args.json:
        atomic_write_json(
            args.json,
            {
                "samples": str(args.samples),
                "num_samples": len(samples),
                "sample_shape": list(samples.shape[1:]),
                "num_reference": reference.n,
                "reference": reference.info,
                "network_sha256": extractor.sha256,
                "dtype": args.dtype,
                "network": network,
                "k": args.k,
                "kid": kid_subsets,
                "noise_resamples": args.noise,
                "metrics": results,
                "warnings": cautions,
            },
        )
        print(f"wrote {args.json}")
    return 0


def print_table(
    results: dict[str, float], k: int, kid_subsets: dict | None = None, noise: int = 0
) -> None:
    """One line per result, e.g. "FID  12.3456", each spread or noise under its number;
    ``kid_subsets`` (subsets, subset_size) labels KID's spread, ``noise`` the resamples
    behind the noise."""
    names = sorted(results, key=ORDER.index)
    labels = {name: LABELS[name].format(k=k, noise=noise, **(kid_subsets or {})) for name in names}
    width = max(len(label) for label in labels.values())
    for name in names:
        digits = 6 if name.startswith("kid") else 4  # KIDs are ~1e-3: 4 decimals hide them
        print(f"{labels[name]:<{width}}  {results[name]:.{digits}f}")
