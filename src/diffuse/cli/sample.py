"""``diffuse sample CKPT --n N --out DIR``: draw samples from a trained diffusion model.

CKPT is a checkpoint folder or a training run's folder (its latest checkpoint; EMA weights
preferred). Writes DIR/samples.npz (arr_0: uint8 NHWC images, arr_1: labels), DIR/grid.png,
DIR/images/NNNNNN.png and DIR/info.json (how they were made: the checkpoint folder, step
and weights file used, the sampler and its steps, ...). Sample i uses the seed --seed + i,
so it is the same whatever --batch-size. --overwrite replaces an earlier sample folder,
never a folder that holds anything else. The PNGs are written as each batch finishes; a
run stopped by Ctrl-C or SIGTERM keeps them in DIR.partial (its info.json says how many
were made and how to make the rest) and leaves DIR as it was.

Samplers: ddpm (ancestral), ddim (--eta), dpm++2m (DPM-Solver++(2M)). The default is
dpm++2m with 20 steps: the FID of 50-step DDIM at 2.5 times fewer network passes
(``benchmarks/bench_time_to_fid.py``). For dpm++2m a bare count N means quadN (quadratic
spacing; evenly spaced steps make it overshoot, so even spacing needs an explicit --steps
evenN); from 50 steps on every sampler does as well. --classes takes the class names the
checkpoint carries (e.g. 3,Sneaker) or indices. Guidance: --cfg W (classifier-free, Ho &
Salimans' w: 0 is conditional sampling; diffusers' scale is 1 + W), optionally only on a
noise-level interval (--cfg-interval); --classifier CKPT --classifier-scale S (ADM).
Upsampling: --upsampler CKPT with its own --upsampler-sampler/--upsampler-steps.
Precision: --precision auto (the default) samples in bf16 only where the network's step
is measured faster in bf16 on this machine (timed once, cached), else fp32; the command
says what it chose and info.json records it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from diffuse.checkpoint import LoadedCheckpoint
from diffuse.cli.common import add_command, add_device_option, add_progress_option
from diffuse.devices import resolve_device
from diffuse.errors import ConfigError
from diffuse.sample import (
    SAMPLERS,
    SAMPLING_PRECISIONS,
    SamplerSettings,
    SamplesInterrupted,
    Stage,
    check_request,
    generate_batches,
    load_classifier,
    load_diffusion_model,
    write_samples,
)
from diffuse.sample.interrupt import exit_status, sigterm_interrupts
from diffuse.sample.output import LAYOUT

STEPS_HELP = (
    "the steps walked, a respacing of the training chain: evenN (evenly spaced), quadN "
    "(quadratic, dense near the data), ddimN (DDIM's constant stride), counts per section "
    "such as 10,15,20, or a bare count N: quadN for dpm++2m (never evenly spaced with it), "
    "evenN for the other samplers"
)


def parse_integers(text: str, option: str) -> list[int]:
    """``"1,2,7"`` -> [1, 2, 7], or a :class:`ConfigError` naming ``option``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated integers, got {text!r}") from None


def parse_classes(text: str | None, class_names: Sequence[str] = ()) -> list[int] | None:
    """The labels of ``--classes``, each item a class name the checkpoint carries (the
    names its sample grids show; case ignored when that is unambiguous) or a class index;
    None stays None."""
    if text is None:
        return None
    if not class_names:
        try:
            return parse_integers(text, "--classes")
        except ConfigError:
            raise ConfigError(
                f"--classes must be comma-separated integers (the checkpoint carries no class "
                f"names to choose by), got {text!r}"
            ) from None
    items = (part.strip() for part in text.split(","))
    return [class_index(item, class_names) for item in items if item]


def class_index(item: str, class_names: Sequence[str]) -> int:
    """The index of class ``item``: a name of ``class_names`` (exact, else the one name
    equal to it ignoring case), else an integer."""
    if item in class_names:
        return list(class_names).index(item)
    folded = [k for k, name in enumerate(class_names) if name.casefold() == item.casefold()]
    if len(folded) == 1:
        return folded[0]
    try:
        return int(item)
    except ValueError:
        listed = ", ".join(f"{k} {name}" for k, name in enumerate(class_names))
        raise ConfigError(
            f"--classes: {item!r} is neither a class name of this model nor an index; its "
            f"classes are {listed}"
        ) from None


def checkpoint_class_names(loaded: LoadedCheckpoint | None) -> tuple[str, ...]:
    """The class names a checkpoint carries (its training set's), or () when it has none."""
    names = None if loaded is None else loaded.metadata.get("class_names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return ()
    return tuple(names)


# What ``diffuse sample`` walks without --sampler/--steps: on the digits model DPM-Solver++(2M)
# with 20 quadratically spaced steps gives the FID of 50-step DDIM (13.11 against 13.14, 500
# samples) at 4.1x the images/s of diffusers' DDIM-50 loop (benchmarks/bench_time_to_fid.py).
DEFAULT_SAMPLER, DEFAULT_STEPS = "dpm++2m", "20"


def add_model_arguments(
    parser: argparse.ArgumentParser, *, default_sampler: str = "ddim", default_steps: str = "50"
) -> None:
    """The options that pick a model and how to sample it (shared with ``diffuse figures``
    and ``diffuse sweep``)."""
    parser.add_argument("checkpoint", help="checkpoint folder, or a run folder (latest checkpoint)")
    parser.add_argument(
        "--weights",
        default="auto",
        help="auto (the EMA weights of the largest rate if saved, else model), model or ema_<rate>",
    )
    parser.add_argument(
        "--sampler", default=default_sampler, choices=SAMPLERS, help="the sampler (see above)"
    )
    parser.add_argument("--steps", default=default_steps, help=STEPS_HELP)
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (ddim only)")
    parser.add_argument("--no-clip", action="store_true", help="do not clip predicted x0")
    parser.add_argument(
        "--classes",
        help="comma-separated classes used in turn, as names the checkpoint carries (e.g. "
        "3,Sneaker) or indices (default: a random class per sample)",
    )
    parser.add_argument(
        "--cfg", type=float, help="classifier-free guidance weight w (scale 1 + w; default: none)"
    )
    parser.add_argument(
        "--cfg-interval",
        type=float,
        nargs=2,
        metavar=("SIGMA_LOW", "SIGMA_HIGH"),
        help="guide only at noise levels sigma = sqrt((1 - abar) / abar) in (LOW, HIGH] "
        "(default: at every step)",
    )
    parser.add_argument("--classifier", help="noisy classifier checkpoint (classifier guidance)")
    parser.add_argument("--classifier-scale", type=float, default=1.0, help="classifier scale s")
    parser.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED + i")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=SAMPLING_PRECISIONS,
        help="the network's precision: auto (bf16 where measured faster on this machine, "
        "else fp32), fp32, bf16 or fp16 (CUDA)",
    )
    add_device_option(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier output of this command (never a folder holding other files)",
    )
    add_progress_option(parser)


@dataclass(frozen=True)
class Base:
    """What the model options of a command resolve to.

    stage:    the model (and classifier) with its sampler and guidance, checked.
    classes:  --classes as indices, or None.
    record:   which checkpoints were used (folder, step, weights file), for info files.
    """

    stage: Stage
    classes: list[int] | None
    record: dict[str, Any]


def load_base(args) -> Base:
    """Load the model (and classifier) the arguments name, checked for the request."""
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.classifier is None and args.classifier_scale != 1.0:
        raise ConfigError("--classifier-scale needs --classifier")
    settings = SamplerSettings(args.sampler, args.steps, args.eta, not args.no_clip)
    device = resolve_device(args.device)
    loaded = load_diffusion_model(args.checkpoint, weights=args.weights, device=device)
    classifier = None
    if args.classifier is not None:
        classifier = load_classifier(args.classifier, loaded.diffusion, device=device)
    stage = Stage(
        loaded.model,
        loaded.diffusion,
        settings,
        cfg=args.cfg,
        cfg_interval=None if args.cfg_interval is None else tuple(args.cfg_interval),
        classifier=None if classifier is None else classifier.model,
        classifier_scale=args.classifier_scale,
        precision=args.precision,
    )
    names = checkpoint_class_names(loaded) or checkpoint_class_names(classifier)
    record = {**loaded.record(), "classifier": None if classifier is None else classifier.record()}
    return Base(stage, parse_classes(args.classes, names), record)


def print_spacing(*settings: SamplerSettings) -> None:
    """Say once for each sampler whose bare step count it respaces its own way (dpm++2m:
    quadratically) which steps it walks, and how to ask for even ones."""
    for chosen in dict.fromkeys(settings):
        if chosen.respacing != str(chosen.steps).strip():
            print(
                f"{chosen.name} with {chosen.steps} steps walks {chosen.respacing} (quadratic "
                f"spacing: evenly spaced steps overshoot with this solver); give "
                f"even{chosen.steps} for evenly spaced steps"
            )


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "sample", "draw samples (PNGs, grid, .npz) from a diffusion model", __doc__
    )
    add_model_arguments(parser, default_sampler=DEFAULT_SAMPLER, default_steps=DEFAULT_STEPS)
    parser.add_argument("--n", type=int, default=16, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per batch")
    parser.add_argument("--upsampler", help="upsampler checkpoint (ADM two-stage sampling)")
    parser.add_argument(
        "--upsampler-weights", default="auto", help="as --weights, for the upsampler"
    )
    parser.add_argument(
        "--upsampler-sampler", default="ddim", choices=SAMPLERS, help="the upsampler's sampler"
    )
    parser.add_argument("--upsampler-steps", default="50", help="as --steps, for the upsampler")
    parser.add_argument(
        "--upsampler-eta", type=float, default=0.0, help="DDIM eta of the upsampler"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    LAYOUT.check(args.out, args.overwrite)
    base = load_base(args)
    upsampler, upsampler_record = None, None
    if args.upsampler is not None:
        settings = SamplerSettings(
            args.upsampler_sampler, args.upsampler_steps, args.upsampler_eta, not args.no_clip
        )
        loaded = load_diffusion_model(
            args.upsampler,
            upsampler=True,
            weights=args.upsampler_weights,
            device=base.stage.device,
        )
        upsampler = Stage(loaded.model, loaded.diffusion, settings, precision=args.precision)
        upsampler_record = loaded.record()
    classes = base.classes
    check_request(
        base.stage, args.n, classes=classes, batch_size=args.batch_size, upsampler=upsampler
    )
    print_spacing(base.stage.sampler, *([] if upsampler is None else [upsampler.sampler]))
    rows = min(args.n, args.batch_size)
    stage = fixed_precision(base.stage, rows)
    if upsampler is not None:
        upsampler = fixed_precision(upsampler, rows, "upsampler: ")
    batches = generate_batches(
        stage,
        args.n,
        seed=args.seed,
        classes=classes,
        batch_size=args.batch_size,
        upsampler=upsampler,
        progress=not args.no_progress,
    )
    # With "auto", the rest of an interrupted run is advised in the precision chosen here
    # (another batch size could decide otherwise), when both stages chose the same.
    chosen = {stage.precision, *([upsampler.precision] if upsampler else [])}
    pinned = next(iter(chosen)) if args.precision == "auto" and len(chosen) == 1 else None
    info = {
        **base.record,
        "sampler": args.sampler,
        "steps": base.stage.sampler.respacing,
        "precision": stage.precision,
        "eta": args.eta,
        "clip_denoised": not args.no_clip,
        "classes": classes,
        "cfg": args.cfg,
        "cfg_interval": args.cfg_interval,
        "classifier_scale": args.classifier_scale if args.classifier else None,
        "upsampler": upsampler_record,
        "upsampler_sampler": args.upsampler_sampler if upsampler else None,
        "upsampler_steps": upsampler.sampler.respacing if upsampler else None,
        "upsampler_precision": upsampler.precision if upsampler else None,
        "seed": args.seed,
        "seeds": f"sample i uses seed {args.seed} + i",
    }
    try:
        with sigterm_interrupts():
            samples = write_samples(
                args.out,
                batches,
                args.n,
                overwrite=args.overwrite,
                info=info,
                rest=lambda made: rest_advice(args, classes, made, pinned),
            )
    except SamplesInterrupted as stop:
        kept = f"they are in {stop.folder}" if stop.folder else "nothing was kept"
        print(
            f"diffuse sample: {stop.signal}: stopped after {stop.made} of {stop.requested} "
            f"samples; {kept} ({args.out} was not written)",
            file=sys.stderr,
        )
        return exit_status(stop.signal)
    shape = "x".join(map(str, samples.images.shape[1:]))
    print(f"{len(samples.images)} samples ({shape}) written to {args.out}")
    return 0


def fixed_precision(stage: Stage, batch: int, what: str = "") -> Stage:
    """``stage`` in the precision it decides for batches of ``batch`` images; for "auto"
    it says what it chose and why (prefixed by ``what``)."""
    decision = stage.decide_precision(batch)
    if stage.precision == "auto":
        print(f"{what}{decision.message()}", flush=True)
    return replace(stage, precision=decision.precision)


def rest_advice(args, classes: list[int] | None, made: int, precision: str | None = None) -> str:
    """How to make the samples an interrupted run did not: the same command from sample
    ``made`` on (its seed, and --classes rotated so each sample keeps its class), in
    ``precision`` when given (what "auto" chose for this run)."""
    options = f"--seed {args.seed + made} --n {args.n - made}"
    if classes is not None:
        turn = made % len(classes)
        options += " --classes " + ",".join(map(str, classes[turn:] + classes[:turn]))
    if precision is not None:
        options += f" --precision {precision}"
    made_text = f"samples 0 .. {made - 1} of {args.n} were made" if made else "none was made"
    return (
        f"{made_text}; the same command with {options} and another --out makes the other "
        f"{args.n - made} (its sample i is sample {made} + i of this run)"
    )
