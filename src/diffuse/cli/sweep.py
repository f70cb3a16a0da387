"""``diffuse sweep CKPT --ref REF --param steps --values 5,10,20,50 --n N --out DIR``:
sample quality against one sampling setting.

For each value of --param (and each sampler of --samplers), draws N samples with the same
seeds (sample i from seed --seed + i, its class included) and evaluates them against the
reference as ``diffuse eval`` does. Parameters:

- steps:              the sampler's step count, respaced by --spacing (auto: quadratic
                      for dpm++2m, even for the others; or even, ddim, quad for all);
- cfg:                the classifier-free guidance weight w (a model with a null class);
- classifier-scale:   s of classifier guidance (needs --classifier);
- guidance-interval:  the upper noise level sigma of the classifier-free guidance interval
                      (needs --cfg; the lower end is --cfg-interval's, or 0).

--samplers ddim,dpm++2m draws one series per sampler, e.g. FID against steps for each.
The other options set every point as in ``diffuse sample`` (--steps is ignored by a steps
sweep). REF is a data set name (its statistics are computed once and cached at the
model's resolution) or a statistics .npz.

Writes DIR/sweep.json, DIR/sweep.csv, a plot per metric (fid.png, sfid.png,
precision_recall.png, inception_score.png) and DIR/samples/<sampler>_<param>_<value>.npz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuse.cli.common import add_command, add_reference_options, load_reference
from diffuse.cli.sample import add_model_arguments, load_base, print_spacing
from diffuse.errors import ConfigError
from diffuse.eval.evaluate import METRICS
from diffuse.eval.features import InceptionExtractor
from diffuse.eval.sweep import (
    LAYOUT,
    PARAMS,
    SPACINGS,
    iter_sweep,
    parse_values,
    save_sweep,
    sweep_metrics,
    sweep_points,
)
from diffuse.io import atomic_directory
from diffuse.sample import check_request

COLUMNS = {"fid": "FID", "sfid": "sFID", "is": "IS", "precision": "precision", "recall": "recall"}


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "sweep",
        "FID (sFID, IS, precision/recall) against steps or guidance strength",
        __doc__,
    )
    add_model_arguments(parser)
    parser.add_argument("--param", required=True, choices=PARAMS, help="the swept setting")
    parser.add_argument("--values", required=True, help="comma-separated values, e.g. 5,10,20")
    parser.add_argument("--samplers", help="comma-separated samplers, one series each")
    parser.add_argument(
        "--spacing",
        default="auto",
        choices=list(SPACINGS),
        help="respacing of a steps sweep: auto is each sampler's own (quadratic for dpm++2m, "
        "even for the others)",
    )
    parser.add_argument("--n", type=int, required=True, help="samples per point")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per batch")
    add_reference_options(parser)
    parser.add_argument(
        "--metrics",
        help=f"comma-separated subset of {','.join(METRICS)} (default: all available)",
    )
    parser.add_argument("--k", type=int, default=3, help="precision/recall neighbourhood")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    values = parse_values(args.param, args.values)
    samplers = None
    if args.samplers is not None:
        samplers = [name.strip() for name in args.samplers.split(",") if name.strip()]
        if not samplers:
            raise ConfigError("--samplers names no sampler; give e.g. ddim,dpm++2m")
    LAYOUT.check(args.out, args.overwrite)
    loaded = load_base(args)
    base, classes = loaded.stage, loaded.classes
    points = sweep_points(base, args.param, values, samplers=samplers, spacing=args.spacing)
    check_request(base, args.n, classes=classes, batch_size=args.batch_size)
    print_spacing(*(point.stage.sampler for point in points))
    extractor = InceptionExtractor(args.inception_weights, device=base.device)
    wanted = sweep_metrics(args.metrics, None, extractor.has_logits, args.n, args.k)
    progress = not args.no_progress
    reference = load_reference(args, wanted, extractor, progress, base.model.image_size)
    metrics = sweep_metrics(args.metrics, reference, extractor.has_logits, args.n, args.k)
    rows = []
    with atomic_directory(args.out, LAYOUT, overwrite=args.overwrite) as folder:
        (folder / "samples").mkdir()
        for point, samples, row in iter_sweep(
            points,
            reference,
            args.n,
            seed=args.seed,
            classes=classes,
            batch_size=args.batch_size,
            metrics=metrics,
            extractor=extractor,
            k=args.k,
            progress=progress,
        ):
            arrays = {"arr_0": samples.images}
            if samples.labels is not None:
                arrays["arr_1"] = samples.labels
            name = f"{point.sampler}_{args.param}_{point.value:g}.npz"
            np.savez(folder / "samples" / name, **arrays)
            rows.append(row)
        info = {
            **loaded.record,
            "samplers": list(dict.fromkeys(point.sampler for point in points)),
            "values": values,
            "spacing": args.spacing if args.param == "steps" else None,
            "steps": None
            if args.param == "steps"
            else {point.sampler: point.stage.sampler.respacing for point in points},
            "eta": args.eta,
            "cfg": args.cfg,
            "cfg_interval": args.cfg_interval,
            "classifier_scale": args.classifier_scale if args.classifier else None,
            "classes": classes,
            "n": args.n,
            "seed": args.seed,
            "reference": reference.info,
            "network_sha256": extractor.sha256,
            "k": args.k,
        }
        written = save_sweep(folder, rows, args.param, info)
    print_table(rows, args.param)
    print(f"wrote {args.out}: {', '.join(written)}, samples/")
    return 0


def print_table(rows: list[dict], param: str) -> None:
    """One line per point: sampler, value, metrics, seconds."""
    metrics = [name for name in COLUMNS if name in rows[0]]
    header = ["sampler", param, *(COLUMNS[name] for name in metrics), "seconds"]
    widths = [max(len(header[0]), *(len(row["sampler"]) for row in rows)), *map(len, header[1:])]
    widths = [max(width, 8) for width in widths]
    print("  ".join(f"{title:>{width}}" for title, width in zip(header, widths, strict=True)))
    for row in rows:
        seconds = row["sampling_seconds"] + row["evaluation_seconds"]
        cells = [row["sampler"], f"{row['value']:g}", *(f"{row[m]:.4f}" for m in metrics)]
        cells.append(f"{seconds:.1f}")
        print("  ".join(f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=True)))
