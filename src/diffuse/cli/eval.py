"""``diffuse eval SAMPLES --ref DATASET_OR_STATS``: FID, sFID, IS and precision/recall.

SAMPLES is an .npz (``arr_0``: uint8 [N, H, W, C]), an .npy or a folder of images. The
reference is a data set name or a folder of images (their statistics are computed once
and cached) or an .npz of statistics: one this command cached, or a guided-diffusion
reference batch.

Samples and reference images alike go to the Inception network at their own size, which
resizes them to 299x299 (the FID convention): the numbers equal those of
``fid(inception_features(load_samples(SAMPLES)), inception_features(reference_images(REF)))``
in Python. --ref-size N instead fits the reference images to NxN as training does (a
named set padded or resized, a folder's images centre-cropped and resized).

The cache holds what the metrics asked for need, keyed by the data set or the folder's
resolved path and checked against a fingerprint of its files: a changed folder is
measured again. The command says where statistics were read or written.
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
from diffuse.eval.evaluate import METRICS, SmallSampleWarning, evaluate, parse_metrics
from diffuse.eval.features import DEFAULT_BATCH_SIZE, DTYPES, InceptionExtractor
from diffuse.eval.samples import load_samples
from diffuse.io import atomic_write_json
from diffuse.outputs import check_output_file

LABELS = {
    "fid": "FID",
    "sfid": "sFID",
    "is": "Inception Score",
    "is_std": "  (std over 10 splits)",
    "precision": "precision (k={k})",
    "recall": "recall (k={k})",
}


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "eval", "FID, sFID, Inception Score, precision/recall of samples", __doc__
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
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
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
            samples, reference, metrics=metrics, extractor=extractor, k=args.k, progress=progress
        )
    cautions = []
    for item in caught:
        if issubclass(item.category, SmallSampleWarning):
            cautions.append(str(item.message))
            print(f"diffuse eval: warning: {item.message}", file=sys.stderr)
        else:  # not ours: shown as Python would have shown it
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)
    print_table(results, args.k)
    print(f"{len(samples)} samples {list(samples.shape[1:])} from {args.samples}")
    print(f"reference: {reference.describe()}")
    print(f"network: sha256 {extractor.sha256[:16]}, {args.dtype}")
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
                "k": args.k,
                "metrics": results,
                "warnings": cautions,
            },
        )
        print(f"wrote {args.json}")
    return 0


def print_table(results: dict[str, float], k: int) -> None:
    labels = {name: LABELS[name].format(k=k) for name in results}
    width = max(len(label) for label in labels.values())
    for name, value in results.items():
        print(f"{labels[name]:<{width}}  {value:.4f}")
