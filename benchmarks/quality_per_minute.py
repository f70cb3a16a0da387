"""Quality per CPU-minute (issue 13's headline): FID of a preset trained for a wall-clock
budget on this machine, measured as a new user would measure it.

    python benchmarks/quality_per_minute.py              # fashion, 30 min, marks 5,10,20,30
    python benchmarks/quality_per_minute.py --set train.batch_size=128 --tag batch128
    python benchmarks/quality_per_minute.py --tag batch128 --cfg 1,2 --cfg-interval 0.28 5.42 \
        --results reproduction/quality-per-minute-batch128-interval   # the same run, rescored

1. A short probe run (``diffuse train ... --steps 30``) measures the training rate here;
   the run's ``train.steps`` is set so that its learning-rate schedule ends at the budget
   (rate x minutes / batch, less 3 % for the pieces' start-up), unless ``--set
   train.steps=N`` says otherwise. The short-run recipe: the preset's, with a warm-up of
   ``--warmup`` steps (50) and the ``--set`` changes.
2. Training runs in pieces, each stopped by SIGTERM as ``timeout -s TERM`` would stop it,
   at every mark of ``--marks`` (minutes of training wall time, the pieces' start-up
   included); the trainer saves a checkpoint on SIGTERM and the next piece resumes it.
3. At every mark ``diffuse sample`` draws ``--n`` class-balanced samples (classes in
   turn) with its default sampler, for each guidance weight of ``--cfg`` (on the noise
   levels of ``--cfg-interval`` only, when given: Kynkaanniemi et al. 2024), and ``diffuse
   eval`` measures FID and precision/recall against the first ``--ref-n`` training images
   (the last mark first at every weight, then the others unguided, then guided: an
   interrupted measurement has the headline, then the curve, soonest; the results are
   written after every score). The floor is ``--n`` real test images against the same
   reference. A mark whose checkpoint is gone is trained again to its step (``diffuse
   train --stop-at``: the same weights).

Everything lands in ``--out`` (default ``runs/quality-per-minute[-TAG]``), and the results
(``results.json``) and the curve (``fid_vs_minutes.png``) in ``--results`` (default
``reproduction/quality-per-minute[-TAG]``), with the grid of the last mark's samples at
every weight (``samples-wW.png``). A finished mark, sample set or score is
reused, so an interrupted measurement continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import describe_machine
from diffuse.eval.reference import reference_images
from diffuse.io import atomic_write_text
from diffuse.plots import plot_lines
from diffuse.reproduce.store import provenance
from diffuse.train.state import step_folder

DIFFUSE = [sys.executable, "-m", "diffuse"]
STARTUP_MARGIN = 0.97  # of the budget's steps: the pieces' start-up eats into the budget


def diffuse(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``diffuse ARGS`` to completion; raise with its error output when it fails."""
    done = subprocess.run([*DIFFUSE, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"diffuse {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def training_rate(args, folder: Path, batch_size: int) -> float:
    """Images/s of the preset's training step here, from a 30-step probe run."""
    diffuse(
        "train", "--preset", args.preset, "--data", args.data, "--out", str(folder),
        "--steps", "30", "--overwrite", "--no-progress",
        "--set", "train.log_every=10", "--set", "train.sample_every=0",
        "--set", f"train.batch_size={batch_size}", *settings(args),
    )  # fmt: skip
    lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    rates = [json.loads(line).get("images_per_s") for line in lines if line.strip()]
    rates = [rate for rate in rates if rate]
    if not rates:
        raise RuntimeError(f"the probe run in {folder} logged no training rate")
    return float(rates[-1])  # the last window: past the first steps' warm-up


# set by the script (plan_steps, train_piece) and passed once
PLANNED = ("train.steps", "train.batch_size", "train.keep_checkpoints")


def setting(text: str) -> tuple[str, str]:
    """One ``--set KEY=VALUE`` recipe change, as a (key, value) pair."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def numbers(text: str) -> list[float]:
    """A comma-separated list of numbers (``--marks``)."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None


def settings(args) -> list[str]:
    """The recipe's ``--set`` options: the warm-up and the changes, less the planned keys."""
    pairs = {"train.warmup_steps": str(args.warmup), **dict(args.set)}
    chosen = [f"{key}={value}" for key, value in pairs.items() if key not in PLANNED]
    return [option for pair in chosen for option in ("--set", pair)]


def train_piece(args, run: Path, minutes_left: float, state: dict) -> bool:
    """Train (or resume) until ``minutes_left`` have passed, then stop it with SIGTERM, as
    ``timeout -s TERM`` would; True when the run reached its last step first."""
    argv = train_options(args, run, state)
    process = subprocess.Popen([*DIFFUSE, *argv], stdout=subprocess.DEVNULL)
    try:
        process.wait(timeout=max(0.0, minutes_left * 60))
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the trainer saves a checkpoint and exits
        process.wait()
    if process.returncode == -signal.SIGTERM:
        raise RuntimeError(
            f"diffuse {' '.join(argv)} was stopped before it started training (its mark "
            f"came {minutes_left:.2f} minutes after its start): choose later --marks"
        )
    if process.returncode not in (0, 128 + signal.SIGTERM):
        raise RuntimeError(f"diffuse {' '.join(argv)} exited with {process.returncode}")
    return process.returncode == 0


def train_options(args, run: Path, state: dict) -> list[str]:
    """``diffuse train`` options that resume the run in ``run``, or start it with the
    recipe and the planned steps and batch."""
    argv = ["train", "--out", str(run), "--no-progress"]
    if (run / "run.json").is_file():
        return [*argv, "--resume"]
    argv += ["--preset", args.preset, "--data", args.data, *settings(args)]
    argv += ["--set", f"train.steps={state['steps']}", "--set", "train.sample_every=0"]
    argv += ["--set", f"train.batch_size={state['batch_size']}"]
    # every mark's checkpoint is scored after the training: none may be pruned, and the
    # periodic checkpoints between the marks count against the limit too, so the limit is
    # as many as there can be (one a step)
    return [*argv, "--set", f"train.keep_checkpoints={state['steps']}"]


def mark_checkpoint(args, out: Path, state: dict, mark: dict) -> Path:
    """The checkpoint of ``mark``: the run's, or, when that one is gone (pruned), the same
    run trained again from its start to the mark's step (``--stop-at``: the schedule and
    every random draw are the run's, so the weights are too; the mark's minutes stay the
    measured ones)."""
    checkpoint = step_folder(out / "run", mark["step"])
    if checkpoint.is_dir():
        return checkpoint
    rebuilt = out / f"rebuilt-{mark['minutes']:g}min"
    if not step_folder(rebuilt, mark["step"]).is_dir():
        print(f"{checkpoint} is gone: training {rebuilt} again to step {mark['step']}")
        diffuse(*train_options(args, rebuilt, state), "--stop-at", str(mark["step"]))
    return step_folder(rebuilt, mark["step"])


def plan_steps(args, out: Path, minutes: float) -> dict:
    """The run's batch size and steps: ``--set train.steps=N``, or as many steps as the
    probe's training rate gets through in ``minutes``."""
    given = dict(args.set)
    batch = int(given.get("train.batch_size") or preset_batch(args))
    if "train.steps" in given:
        return {"steps": int(given["train.steps"]), "batch_size": batch, "why": "as given"}
    rate = training_rate(args, out / "probe", batch)
    steps = math.floor(rate * minutes * 60 / batch * STARTUP_MARGIN)
    why = f"the probe trained {rate:.1f} images/s: the schedule ends at {minutes:g} minutes"
    return {"steps": steps, "batch_size": batch, "rate": rate, "why": why}


def latest_step(run: Path) -> int:
    folders = sorted((run / "checkpoints").glob("step-*"))
    if not folders:
        raise RuntimeError(f"{run} holds no checkpoint")
    return int(folders[-1].name.split("-")[1])


def score(args, out: Path, state: dict, mark: dict, cfg: float, folder: Path) -> dict:
    """FID and precision/recall of ``--n`` class-balanced samples of the mark's checkpoint."""
    scores = folder / "scores.json"
    if scores.is_file():
        return json.loads(scores.read_text(encoding="utf-8"))
    checkpoint = mark_checkpoint(args, out, state, mark)
    samples = folder / "samples"
    if not (samples / "samples.npz").is_file():
        classes = ",".join(str(c) for c in range(args.classes))
        guidance = ["--cfg", f"{cfg:g}", *interval_options(args)] if cfg else []
        diffuse(
            "sample", str(checkpoint), "--n", str(args.n), "--classes", classes,
            "--out", str(samples), "--overwrite", "--no-progress", *guidance,
        )  # fmt: skip
    evaluate(args, samples / "samples.npz", scores)
    return json.loads(scores.read_text(encoding="utf-8"))


def evaluate(args, images: Path, scores: Path) -> None:
    diffuse(
        "eval", str(images), "--ref", args.data, "--ref-n", str(args.ref_n),
        "--metrics", "fid,pr", "--json", str(scores), "--overwrite",
    )  # fmt: skip


def floor(args, out: Path) -> dict:
    """The same metrics of ``--n`` real test images: the best FID this count allows."""
    scores = out / "floor.json"
    if not scores.is_file():
        real = out / "real-test.npz"
        np.savez(real, reference_images(args.data, split="test", n=args.n, progress=False))
        evaluate(args, real, scores)
    return json.loads(scores.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fashion")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument(
        "--marks", default="5,10,20,30", type=numbers, help="minutes of training, ascending"
    )
    parser.add_argument("--warmup", type=int, default=50, help="warm-up steps of the recipe")
    parser.add_argument(
        "--set", action="append", default=[], type=setting, help="recipe change (KEY=VALUE)"
    )
    parser.add_argument("--n", type=int, default=2000, help="samples per score")
    parser.add_argument("--classes", type=int, default=10, help="classes drawn in turn")
    parser.add_argument("--cfg", default="0,1", help="guidance weights w (0: none)")
    parser.add_argument(
        "--cfg-interval",
        nargs=2,
        type=float,
        metavar=("SIGMA_LOW", "SIGMA_HIGH"),
        help="guide only at noise levels sigma in (LOW, HIGH] (diffuse sample --cfg-interval)",
    )
    parser.add_argument("--ref-n", type=int, default=10000, help="first N training images")
    parser.add_argument("--tag", help="names the run and results folders")
    parser.add_argument("--out", type=Path, help="run folder root")
    parser.add_argument("--results", type=Path, help="folder of results.json and the plot")
    args = parser.parse_args(argv)
    suffix = f"-{args.tag}" if args.tag else ""
    out = args.out or Path(f"runs/quality-per-minute{suffix}")
    results_folder = args.results or Path(f"reproduction/quality-per-minute{suffix}")
    marks = args.marks
    weights = [float(w) for w in args.cfg.split(",")]
    if marks != sorted(marks) or marks[0] <= 0:
        parser.error("--marks must be positive and ascending")
    print(describe_machine())
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"marks": []}
    if "steps" not in state:
        state.update(plan_steps(args, out, marks[-1]), trained_minutes=0.0)
        atomic_write_text(state_path, json.dumps(state, indent=1))
    print(f"{state['steps']} steps of {state['batch_size']} ({state['why']})")
    run = out / "run"
    for minutes in marks:
        if any(m["minutes"] == minutes for m in state["marks"]):
            continue
        if not state.get("finished") and minutes > state["trained_minutes"]:
            started = time.perf_counter()
            state["finished"] = train_piece(args, run, minutes - state["trained_minutes"], state)
            state["trained_minutes"] += (time.perf_counter() - started) / 60
        mark = {"minutes": minutes, "wall_minutes": round(state["trained_minutes"], 2)}
        mark["step"] = latest_step(run)
        state["marks"].append(mark)
        atomic_write_text(state_path, json.dumps(state, indent=1))
        print(f"{minutes:g} min: step {mark['step']}")
    real = pick(floor(args, out))
    print(f"floor, {args.n} real test images: {real}")
    rows = []
    for mark, cfg in scoring_order(state["marks"], weights):
        folder = out / f"scores-{mark['minutes']:g}min-w{cfg:g}{interval_tag(args, cfg)}"
        folder.mkdir(exist_ok=True)
        values = score(args, out, state, mark, cfg, folder)
        rows.append({**mark, "cfg": cfg, **pick(values)})
        print(f"{mark['minutes']:g} min (step {mark['step']}), w = {cfg:g}: {pick(values)}")
        # after every score: an interrupted measurement keeps what it measured
        write_results(args, results_folder, state, rows, real, weights)
        grid = folder / "samples" / "grid.png"
        if mark is state["marks"][-1] and grid.is_file():  # the headline's samples, to see
            shutil.copyfile(grid, results_folder / f"samples-w{cfg:g}{interval_tag(args, cfg)}.png")
    return 0


def interval_options(args) -> list[str]:
    """``diffuse sample``'s guidance interval option, when ``--cfg-interval`` is given."""
    if args.cfg_interval is None:
        return []
    return ["--cfg-interval", *(f"{sigma:g}" for sigma in args.cfg_interval)]


def interval_tag(args, cfg: float) -> str:
    """What tells a guided score's folder on an interval from one guided at every step."""
    if not cfg or args.cfg_interval is None:
        return ""
    low, high = args.cfg_interval
    return f"-interval{low:g}-{high:g}"


def interval_label(args, cfg: float) -> str:
    if not cfg or args.cfg_interval is None:
        return ""
    low, high = args.cfg_interval
    return f", sigma in ({low:g}, {high:g}]"


def scoring_order(marks: list[dict], weights: list[float]) -> list[tuple[dict, float]]:
    """The (mark, guidance weight) pairs in the order they are scored: the budget's end
    (the headline) at every weight, then the earlier marks at the first weight (the
    default sampler's curve), then at the others: an interrupted measurement has the
    headline soonest, then the curve."""
    last, earlier = marks[-1], marks[-2::-1]
    return [(last, cfg) for cfg in weights] + [(m, cfg) for cfg in weights for m in earlier]


def preset_batch(args) -> int:
    shown = diffuse("train", "--preset", args.preset, "--data", args.data, "--show-config")
    return int(json.loads(shown.stdout)["train"]["batch_size"])


def pick(scores: dict) -> dict:
    """FID, precision and recall of a ``diffuse eval --json`` record."""
    metrics = scores["metrics"]
    return {key: metrics[key] for key in ("fid", "precision", "recall") if key in metrics}


def write_results(args, folder, state, rows, real, weights) -> None:
    """``results.json`` and the curve of FID against training minutes from the rows
    scored so far (a mark not scored yet is a gap in its line)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda row: (row["minutes"], row["cfg"]))
    marks = [mark["minutes"] for mark in state["marks"]]
    fids = {(row["minutes"], row["cfg"]): row["fid"] for row in rows}
    record = {
        "preset": args.preset,
        "data": args.data,
        "recipe": {"warmup_steps": args.warmup, "set": dict(args.set), **state},
        "samples": args.n,
        "cfg_interval": args.cfg_interval,
        "reference": f"the first {args.ref_n} training images of {args.data}",
        "rows": rows,
        "complete": len(rows) == len(marks) * len(weights),
        "floor": real,
        "command": "python benchmarks/quality_per_minute.py " + " ".join(sys.argv[1:]),
        **provenance(),
    }
    atomic_write_text(folder / "results.json", json.dumps(record, indent=1) + "\n")
    series = {
        f"w = {cfg:g}{interval_label(args, cfg)}": [
            fids.get((minutes, cfg), math.nan) for minutes in marks
        ]
        for cfg in weights
    }
    series["floor (real test images)"] = [real["fid"]] * len(marks)
    plot_lines(
        folder / "fid_vs_minutes.png", marks, series, xlabel="training minutes (2-core CPU)",
        ylabel=f"FID of {args.n} samples", title=f"{args.preset}: FID against training time",
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
