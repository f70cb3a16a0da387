"""``diffuse train``: train a diffusion model (or an upsampler) from a preset.

    diffuse train --preset digits --data digits --out runs/digits

trains the preset's network on the data set with the preset's training recipe and
writes the run folder: checkpoints/ (the last few, loadable by every other command),
metrics.jsonl, samples/ (grids of samples: one row per class, with classifier-free
guidance for a class-conditional model) and run.json (the full configuration). Any
setting can be changed with --set SECTION.FIELD=VALUE (listed below). SIGINT/SIGTERM
save a checkpoint and stop; --resume continues exactly where the run stopped. Under
torchrun every process runs this command and process 0 writes.

The data decides what the preset cannot know, unless you give it: the channels (grey or
colour), the classes (a folder's sub-folders; a class-conditional preset on a folder
without sub-folders trains an unconditional model) and, when the images are smaller than
the preset's, the image size. Each decision, and every crop or resize of the images, is
printed once at the start.

    diffuse train --preset digits --data digits --show-config > digits.json
    diffuse train --config digits.json --out runs/a --lr 3e-4

--config FILE reads the settings --show-config prints (or a run's run.json: the same
run again), whole or in part, JSON or YAML (with PyYAML). Precedence, lowest first: the
preset (--preset, else the file's), the file, then the flags and --set.

--set train.eval_every=N measures FID, precision and recall of the EMA model's samples
every N steps and at the end (metrics.jsonl, the progress bar) against the training
images, and keeps the checkpoint of the lowest FID in RUN/best.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from dataclasses import fields

import torch

from diffuse import presets
from diffuse.cli import common
from diffuse.data.survey import survey_data
from diffuse.diffusion.diffusion_config import LOSSES, PREDICTIONS, SCHEDULES, VARIANCES
from diffuse.errors import ConfigError, DiskFullError
from diffuse.nn import BLOCKS, ClassifierConfig, SuperResConfig
from diffuse.train import field_help, parse_override, resume, train
from diffuse.train.autoconfig import fitting_notes
from diffuse.train.config_file import read_config, spec_from_config
from diffuse.train.distributed import is_first_process
from diffuse.train.preview import grid_caption
from diffuse.train.run import RunFolder
from diffuse.train.session import MEASUREMENT_SETTINGS, RESUMABLE_CHANGES

# Flags that are shortcuts for a training setting.
SHORTCUTS = {
    "steps": (
        "train.steps",
        int,
        "optimizer steps of the whole run (default: the preset's recipe)",
    ),
    "batch_size": ("train.batch_size", int, "images per step over all processes"),
    "lr": ("train.lr", float, "peak learning rate"),
    "seed": ("train.seed", int, "seed of every random draw (data order, noise, dropout)"),
    "precision": (
        "train.precision",
        str,
        "auto (bf16 where measured faster here), fp32, bf16 (CPU or CUDA) or fp16 (CUDA)",
    ),
    "microbatch": (
        "train.microbatch",
        int,
        "largest batch per forward pass (gradient accumulation)",
    ),
    "workers": (
        "train.workers",
        int,
        "processes that decode a folder's images ahead of the steps (default: min(4, CPUs "
        "- 1); 0: none; the results are the same for any number)",
    ),
}


def register(subparsers) -> None:
    add_command(subparsers, "train", "train a diffusion model or upsampler from a preset", __doc__)


def add_command(subparsers, name: str, summary: str, description: str) -> None:
    """Add the sub-command ``name`` ("train" or "train-classifier") and its options."""
    task = "classifier" if name == "train-classifier" else "diffusion"
    parser = common.add_command(subparsers, name, summary, description, epilog=settings_help(task))
    add_arguments(parser)
    parser.set_defaults(func=lambda args: run(args, task))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``train`` and ``train-classifier``."""
    parser.add_argument(
        "--preset",
        help="named configuration to start from, e.g. digits (list: "
        f"{', '.join(presets.names())}); not needed with --resume or a --config that names it",
    )
    parser.add_argument(
        "--data",
        help="data set name (digits, fashion-mnist, mnist, cifar10) or a folder of images "
        "(class = sub-folder name); not needed with --resume or a --config that names it",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="start from the settings in FILE (.json, or .yaml/.yml with PyYAML): what "
        "--show-config prints or a run's run.json, whole or in part; --preset, --data, "
        "the other flags and --set override it",
    )
    parser.add_argument(
        "--out", help="the run folder to write (or to resume); not needed with --show-config"
    )
    for name, (key, kind, text) in SHORTCUTS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, help=f"{text} (= --set {key})"
        )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="change any setting, e.g. --set model.model_channels=32 --set train.ema_rates=0.999; "
        "repeatable; the fields are listed below",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its latest checkpoint with its saved settings "
        f"(only {', '.join(sorted(k.split('.')[1] for k in RESUMABLE_CHANGES))} may change, "
        f"and {', '.join(sorted(k.split('.')[1] for k in MEASUREMENT_SETTINGS))} until the run "
        "has measured FID)",
    )
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run already in --out (its checkpoints too) and start again",
    )
    parser.add_argument(
        "--stop-at",
        type=int,
        metavar="STEP",
        help="stop after step STEP with a checkpoint, as SIGTERM would, without changing the "
        "schedule (train.steps); --resume continues as if the run had not stopped (a job's "
        "time limit, or a step's checkpoint built again)",
    )
    parser.add_argument("--data-dir", help="folder searched first for a named data set's files")
    parser.add_argument(
        "--no-download", action="store_true", help="never download a missing named data set"
    )
    common.add_device_option(parser)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    parser.add_argument(
        "--show-config",
        action="store_true",
        help="print the full configuration (preset + changes) as JSON and exit",
    )
    common.add_progress_option(parser)


def settings_help(task: str) -> str:
    """The epilog listing every field that --set accepts."""
    lines = ["settings for --set (train.* defaults are the generic ones; presets have recipes):"]
    for name, text in field_help().items():
        lines.append(f"  train.{name}: {text}")
    lines.append(
        f"  diffusion.schedule ({'|'.join(SCHEDULES)}), diffusion.timesteps, diffusion.prediction "
        f"({'|'.join(PREDICTIONS)}), diffusion.variance ({'|'.join(VARIANCES)}), "
        f"diffusion.loss ({'|'.join(LOSSES)})"
    )
    config = ClassifierConfig if task == "classifier" else SuperResConfig
    names = ", ".join(f.name for f in fields(config))
    lines.append(
        f"  model.<field>, one of: {names} (documented in diffuse.nn.network_config; --show-config "
        "prints a preset's values)"
    )
    lines.append(
        f"  model.blocks: each level's block recipe, in order, from {', '.join(BLOCKS)} "
        "(e.g. --set model.blocks=res,res,clsatn,atn,chnatn; atn only at "
        "model.attention_resolutions)"
    )
    return "\n".join(lines)


def run(args, task: str) -> int:
    if args.out is None and (args.resume or not args.show_config):
        raise ConfigError(
            "--out RUN is needed: the run folder to write (or to resume); only --show-config "
            "of a new run can do without it"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(parse_override(text) for text in args.overrides)
    for name, (key, _, _) in SHORTCUTS.items():
        if getattr(args, name) is not None:
            overrides[key] = getattr(args, name)
    options = dict(device=args.device, progress=not args.no_progress, stop_at=args.stop_at)
    if args.resume and args.config:
        raise ConfigError(
            "a resumed run keeps the settings of its run.json; --config starts a new run "
            "(drop --config, or --resume)"
        )
    if args.resume:
        spec = RunFolder(args.out).read_spec()
        _check_same(args, spec, task)
        if args.show_config:
            return _show(spec.with_overrides(overrides))
        with _continue_hint_on_disk_full(spec, args.out):
            result = resume(args.out, changes=overrides, data_dir=args.data_dir, **options)
        spec = RunFolder(args.out).read_spec()  # with the changes resumed under
    else:
        spec = new_spec(args, task, overrides)
        if args.show_config:
            for note in fitting_notes(survey_data(spec.data.name), spec.model.image_size):
                print(f"data: {note}", file=sys.stderr)
            return _show(spec)
        with _continue_hint_on_disk_full(spec, args.out):
            result = train(spec, args.out, overwrite=args.overwrite, **options)
    if result.rank != 0:
        return 0
    report(result, spec)
    return 128 + signal.Signals[result.interrupted] if result.interrupted else 0


def new_spec(args, task: str, overrides: dict):
    """The spec of a new run: the preset, the --config file, then the flags and --set.
    What the data decides is printed (on stderr with --show-config, whose stdout is the
    configuration), by the first process only."""
    config = read_config(args.config) if args.config else {}
    data = {"name": args.data, "data_dir": args.data_dir}
    data["download"] = False if args.no_download else None
    stream = sys.stderr if args.show_config else sys.stdout
    report = (lambda line: print(line, file=stream)) if is_first_process() else None
    where = f" in {args.config}" if args.config else ""
    return spec_from_config(
        config,
        task=task,
        preset=args.preset,
        data=data,
        overrides=overrides,
        report=report,
        where=where,
    )


def _check_same(args, spec, task: str) -> None:
    for flag, saved in (("preset", spec.preset), ("data", spec.data.name)):
        given = getattr(args, flag)
        if given is not None and given != saved:
            raise ConfigError(
                f"--{flag} {given!r} differs from the run's {saved!r}; a resumed run keeps its "
                f"{flag} (drop --{flag}, or start a new run in another folder)"
            )
    if spec.task != task:
        command = "train-classifier" if spec.task == "classifier" else "train"
        raise ConfigError(f"{args.out} is a {spec.task} run; resume it with `diffuse {command}`")


@contextlib.contextmanager
def _continue_hint_on_disk_full(spec, out) -> Iterator[None]:
    """A disk that fills up during a run: the error also says how to continue it."""
    try:
        yield
    except DiskFullError as error:
        if not RunFolder(out).run_file.is_file():
            raise
        raise DiskFullError(f"{error}, then continue with: {resume_command(spec, out)}") from None


def _show(spec) -> int:
    print(json.dumps(spec.to_dict(), indent=2))
    return 0


def report(result, spec) -> None:
    """Print what the run did and where its files are."""
    minutes, seconds = divmod(round(result.seconds), 60)
    print(
        f"trained steps {result.first_step} -> {result.step} in {minutes}m{seconds:02d}s "
        f"({result.images_per_s:.0f} images/s)"
        + (f"; {result.skipped} steps skipped (non-finite loss)" if result.skipped else "")
    )
    print(f"  checkpoint: {result.checkpoint}")
    if result.grid is not None:
        caption = grid_caption(spec.model, spec.train.cfg_weight, spec.null_class is not None)
        print(f"  samples:    {result.grid}" + (f" ({caption})" if caption else ""))
    print(f"  metrics:    {result.run_dir / 'metrics.jsonl'}")
    if result.best is not None:
        print(
            f"  best FID:   {result.best_fid:.2f} at step {result.best_step} "
            f"({spec.train.eval_samples} samples): {result.best}"
        )
    if result.evaluation and "accuracy" in result.evaluation:
        quarters = ", ".join(
            f"{result.evaluation[f'accuracy_q{q}']:.0%}"
            for q in range(4)
            if f"accuracy_q{q}" in result.evaluation
        )
        print(
            f"  held-out accuracy: {result.evaluation['accuracy']:.1%} (per quarter of t, "
            f"data to noise: {quarters})"
        )
    if result.interrupted:
        print(
            f"interrupted by {result.interrupted}; continue with: "
            f"{resume_command(spec, result.run_dir)}",
            file=sys.stderr,
        )
    elif result.step < spec.train.steps:
        print(
            f"stopped at step {result.step} of {spec.train.steps} (--stop-at); continue with: "
            f"{resume_command(spec, result.run_dir)}"
        )


def resume_command(spec, out) -> str:
    """The command that continues the run of ``spec`` in ``out``."""
    command = "train-classifier" if spec.task == "classifier" else "train"
    return f"diffuse {command} --out {out} --resume"
