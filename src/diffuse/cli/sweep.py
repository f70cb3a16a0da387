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

from diffuse.cli.common import add_command, add_reference_options, load_reference
from diffuse.cli.sample import add_model_arguments, load_base, print_spacing
from diffuse.eval.evaluate import METRICS
from diffuse.eval.features import InceptionExtractor
from diffuse.eval.sweep import (
    LAYOUT,
    PARAMS,
    SPACINGS,
    parse_samplers,
    parse_values,
    plan_sweep,
    sweep_metrics,
    write_sweep,
)
from diffuse.io import atomic_directory

COLUMNS = {
    "fid": "FID",
    "kid": "KID",
    "sfid": "sFID",
    "is": "IS",
    "precision": "precision",
    "recall": "recall",
}


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
    # What needs no checkpoint is checked before one is loaded.
    values = parse_values(args.param, args.values)
    samplers = parse_samplers(args.samplers)
    LAYOUT.check(args.out, args.overwrite)
    loaded = load_base(args)
    plan = plan_sweep(
        loaded.stage,
        args.param,
        values,
        args.n,
        samplers=samplers,
        spacing=args.spacing,
        classes=loaded.classes,
        batch_size=args.batch_size,
    )
    print_spacing(*(point.stage.sampler for point in plan.points))
    extractor = InceptionExtractor(args.inception_weights, device=plan.base.device)
    wanted = sweep_metrics(args.metrics, None, extractor.has_logits, args.n, args.k)
    progress = not args.no_progress
    reference = load_reference(args, wanted, extractor, progress, plan.base.model.image_size)
    with atomic_directory(args.out, LAYOUT, overwrite=args.overwrite) as folder:
        rows, written = write_sweep(
            folder,
            plan,
            reference,
            seed=args.seed,
            metrics=args.metrics,
            extractor=extractor,
            k=args.k,
            record=loaded.record,
            progress=progress,
        )
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
        digits = {name: 6 if name == "kid" else 4 for name in metrics}  # KIDs are ~1e-3
        cells = [row["sampler"], f"{row['value']:g}"]
        cells += [f"{row[name]:.{digits[name]}f}" for name in metrics]
        cells.append(f"{seconds:.1f}")
        print("  ".join(f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=True)))
