"""Sample quality across one sampling setting: FID against steps or guidance strength.

The measurements behind the papers' sampling advice: FID against the number of sampling
steps for each sampler (Improved DDPM Fig. 8, DDIM Table 1, DPM-Solver++ Fig. 1), and
FID / precision / recall / Inception Score against the guidance scale (ADM Fig. 4 and
Table 5 for classifier guidance, Ho & Salimans Fig. 2 and Table 1 for classifier-free
guidance), or against the upper noise level of a guidance interval (Kynkaanniemi et al.
2024). Every point draws the same samples' seeds (sample i from seed ``seed + i``, its
class included), so the points differ only in the swept setting.

- :func:`parse_values` / :func:`sweep_points`: the stages of a sweep, each checked when
  made, so a bad request fails before any sampling; :func:`plan_sweep`: the whole
  request (samplers, sample count, classes, batch size) checked the same way.
- :func:`iter_sweep` / :func:`run_sweep`: generate and evaluate each point.
- :func:`save_sweep`: sweep.json, sweep.csv and one PNG plot per metric;
  :func:`write_sweep`: a planned sweep run into a folder, samples included (what
  ``diffuse sweep`` writes).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from diffuse.errors import ConfigError, is_int_at_least
from diffuse.eval.evaluate import evaluate, parse_metrics
from diffuse.eval.features import InceptionExtractor
from diffuse.eval.reference import ReferenceStatistics
from diffuse.io import atomic_write_json, atomic_write_text
from diffuse.outputs import OutputLayout
from diffuse.plots import plot_lines
from diffuse.sample import Samples, Stage, check_request, generate

PARAMS = ("steps", "cfg", "classifier-scale", "guidance-interval")
# How a step count becomes a respacing (see diffuse.sample.sampler): each sampler's own
# (quadratic for dpm++2m, even for the others), even, DDIM's stride, quadratic.
SPACINGS = {"auto": "{}", "even": "even{}", "ddim": "ddim{}", "quad": "quad{}"}
AXIS_LABELS = {
    "steps": "sampling steps",
    "cfg": "classifier-free guidance weight w",
    "classifier-scale": "classifier scale s",
    "guidance-interval": "upper noise level of the guidance interval (sigma)",
}
SWEEP_FILE = "sweep.json"
IS_SPLITS = 10  # the Inception Score's splits (diffuse.eval.inception_score's default)
# The plots: file name, y label and the result columns drawn in it.
PLOTS = (
    ("fid.png", "FID", ("fid",)),
    ("kid.png", "KID", ("kid",)),
    ("sfid.png", "sFID", ("sfid",)),
    ("precision_recall.png", "precision / recall", ("precision", "recall")),
    ("inception_score.png", "Inception Score", ("is",)),
)
LAYOUT = OutputLayout(
    "sweep folder",
    SWEEP_FILE,
    (SWEEP_FILE, "sweep.csv", *(name for name, _, _ in PLOTS), "samples", "samples/*.npz"),
)
"""A sweep's output folder (``diffuse sweep --out``): what ``--overwrite`` may replace."""


@dataclass(frozen=True)
class SweepPoint:
    """One setting of a sweep.

    sampler:  the sampler's name (a series of the plots).
    value:    the swept value (the x axis).
    stage:    the stage that samples this point.
    """

    sampler: str
    value: float
    stage: Stage


def check_param(param: str) -> None:
    """Refuse a parameter that cannot be swept."""
    if param not in PARAMS:
        raise ConfigError(f"cannot sweep {param!r}; choose one of {', '.join(PARAMS)}")


def parse_values(param: str, text: str | Sequence[float]) -> list[float]:
    """The values of a sweep of ``param`` from ``"5,10,20"`` (or a sequence), checked.

    steps: integers >= 1; guidance-interval: noise levels > 0; cfg and classifier-scale:
    finite numbers. Values may not repeat.
    """
    check_param(param)
    parts = [p.strip() for p in text.split(",") if p.strip()] if isinstance(text, str) else text
    if len(parts) == 0:
        raise ConfigError(f"no values to sweep {param} over; give e.g. --values 5,10,20")
    try:
        values = [float(part) for part in parts]
    except (TypeError, ValueError):
        raise ConfigError(f"the values of a sweep must be numbers, got {text!r}") from None
    if param == "steps":
        if not all(v.is_integer() and v >= 1 for v in values):
            raise ConfigError(f"step counts must be positive integers, got {text!r}")
        values = [int(v) for v in values]
    elif not all(math.isfinite(v) for v in values):
        raise ConfigError(f"the values of a {param} sweep must be finite, got {text!r}")
    elif param == "guidance-interval" and min(values) <= 0:
        raise ConfigError(f"the upper ends of guidance intervals must be > 0, got {text!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"the values of a sweep may not repeat, got {text!r}")
    return values


def _setting(base: Stage, sampler: str, param: str, value: float, spacing: str) -> Stage:
    settings = replace(base.sampler, name=sampler)
    if param == "steps":
        return replace(base, sampler=replace(settings, steps=SPACINGS[spacing].format(value)))
    if param == "cfg":
        return replace(base, sampler=settings, cfg=value)
    if param == "classifier-scale":
        return replace(base, sampler=settings, classifier_scale=value)
    low = 0.0 if base.cfg_interval is None else base.cfg_interval[0]
    return replace(base, sampler=settings, cfg_interval=(low, value))


def sweep_points(
    base: Stage,
    param: str,
    values: Sequence[float],
    *,
    samplers: Sequence[str] | None = None,
    spacing: str = "auto",
) -> list[SweepPoint]:
    """The stages of a sweep: ``base`` with ``param`` set to each value, for each sampler.

    base:      the model, sampler and guidance every point starts from.
    param:     one of :data:`PARAMS`: ``steps`` (the sampler's step count, respaced by
               ``spacing``), ``cfg`` (the classifier-free guidance weight w),
               ``classifier-scale`` (s of classifier guidance; ``base`` needs a classifier)
               or ``guidance-interval`` (sigma_high of the classifier-free guidance
               interval, its lower end kept from ``base`` or 0; ``base`` needs cfg).
    values:    the swept values, as :func:`parse_values` returns them.
    samplers:  sampler names, one series each; None: the base's sampler only.
    spacing:   for a steps sweep, ``auto`` (each sampler's own: quadratic for
               ``dpm++2m``, even for the others), ``even``, ``ddim`` (constant stride)
               or ``quad``.
    """
    check_param(param)
    values = parse_values(param, values)
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if param == "classifier-scale" and base.classifier is None:
        raise ConfigError(
            "a classifier-scale sweep needs a noisy classifier: give one (--classifier CKPT)"
        )
    if param == "guidance-interval" and base.cfg is None:
        raise ConfigError(
            "a guidance-interval sweep limits classifier-free guidance: give its weight (--cfg W)"
        )
    names = list(dict.fromkeys(samplers)) if samplers else [base.sampler.name]
    return [
        SweepPoint(name, value, _setting(base, name, param, value, spacing))
        for name in names
        for value in values
    ]


def parse_samplers(text: str | Sequence[str] | None) -> list[str] | None:
    """Sampler names from ``"ddim,dpm++2m"`` (or a sequence); None stays None (the base's
    sampler). Names are checked when the points are made."""
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else text
    samplers = [name.strip() for name in parts if name.strip()]
    if not samplers:
        raise ConfigError("--samplers names no sampler; give e.g. ddim,dpm++2m")
    return samplers


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep request, from :func:`plan_sweep`.

    base:        the stage every point starts from.
    param:       the swept setting (one of :data:`PARAMS`).
    values:      the swept values.
    spacing:     the respacing of a steps sweep (a key of :data:`SPACINGS`).
    points:      the points, sampler by sampler.
    n:           samples per point.
    classes:     labels assigned in turn (None: drawn per sample from its seed).
    batch_size:  samples per network batch.
    """

    base: Stage
    param: str
    values: list[float]
    spacing: str
    points: list[SweepPoint]
    n: int
    classes: list[int] | None
    batch_size: int

    @property
    def samplers(self) -> list[str]:
        """The samplers of the points, in order, each once."""
        return list(dict.fromkeys(point.sampler for point in self.points))


def plan_sweep(
    base: Stage,
    param: str,
    values: str | Sequence[float],
    n: int,
    *,
    samplers: str | Sequence[str] | None = None,
    spacing: str = "auto",
    classes: Sequence[int] | None = None,
    batch_size: int = 64,
) -> SweepPlan:
    """Check a sweep request and make its points, before any sampling.

    base, param, spacing:  as :func:`sweep_points` takes them.
    values:                as :func:`parse_values` takes them ("5,10,20" or numbers).
    n:                     samples per point.
    samplers:              sampler names ("ddim,dpm++2m" or a sequence), one series each;
                           None: the base's sampler only.
    classes:               labels assigned in turn (None: drawn per sample from its seed).
    batch_size:            samples per network batch.

    Raises :class:`ConfigError` naming the problem for a request that cannot be served.
    """
    values = parse_values(param, values)
    samplers = parse_samplers(samplers)
    points = sweep_points(base, param, values, samplers=samplers, spacing=spacing)
    check_request(base, n, classes=classes, batch_size=batch_size)
    classes = None if classes is None else list(classes)
    return SweepPlan(base, param, values, spacing, points, n, classes, batch_size)


def sweep_metrics(
    metrics: str | Sequence[str] | None,
    reference: ReferenceStatistics | None,
    has_logits: bool,
    n: int,
    k: int = 3,
) -> tuple[str, ...]:
    """The metrics of a sweep of ``n`` samples per point, checked before any sampling.

    ``metrics`` names them ("fid,pr", or a sequence); None: every metric that the network
    (Inception Score: logits), the reference (sFID: spatial statistics; precision/recall:
    features) and ``n`` allow. ``k`` is the precision/recall neighbourhood size. A
    ``reference`` of None skips the checks that need it (to fail early, before a reference
    is computed).
    """
    chosen = parse_metrics(metrics, has_logits)
    if not is_int_at_least(k, 1):
        raise ConfigError(f"the precision/recall neighbourhood k must be >= 1, got {k!r}")
    reasons = {name: _unavailable(name, reference, n, k) for name in chosen}
    if metrics is None:
        chosen = tuple(name for name in chosen if reasons[name] is None)
    for name in chosen or ("fid",):
        if reasons[name] is not None:
            raise ConfigError(f"{name} {reasons[name]}")
    return chosen


def _unavailable(name: str, reference: ReferenceStatistics | None, n: int, k: int) -> str | None:
    """Why metric ``name`` cannot be computed from ``n`` samples against ``reference``."""
    if name in ("fid", "sfid") and n < 2:
        return f"needs at least 2 samples per point (a covariance), got {n}"
    if name == "kid" and n < 2:
        return f"needs at least 2 samples per point (pairs of samples), got {n}"
    if name == "kid" and reference is not None and reference.kid_reference is None:
        return "needs the reference's features: give a data set name as the reference"
    if name == "sfid" and reference is not None and reference.spatial is None:
        return "needs the reference's spatial statistics (mu_s, sigma_s): give a data set name"
    if name == "pr" and reference is not None and reference.features is None:
        return "needs the reference's features: give a data set name as the reference"
    if name == "pr" and n <= k:
        return f"needs more than k = {k} samples per point, got {n}"
    if name == "is" and n < IS_SPLITS:
        return f"splits the samples into {IS_SPLITS} parts: needs at least {IS_SPLITS}, got {n}"
    return None


def iter_sweep(
    points: Sequence[SweepPoint],
    reference: ReferenceStatistics,
    n: int,
    *,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    batch_size: int = 64,
    metrics: str | Sequence[str] | None = None,
    extractor: InceptionExtractor | None = None,
    k: int = 3,
    progress: bool = True,
) -> Iterator[tuple[SweepPoint, Samples, dict]]:
    """Generate and evaluate each point in turn; yields (point, its samples, its row).

    points:      from :func:`sweep_points`.
    reference:   the statistics the samples are compared with.
    n:           samples per point; sample i of every point uses seed ``seed + i``.
    classes:     labels assigned in turn (None: drawn per sample from its seed).
    batch_size:  samples per network batch.
    metrics:     as :func:`sweep_metrics` takes them.
    extractor:   the Inception network (None: the default weights).
    k:           the precision/recall neighbourhood size.
    progress:    show progress bars (points, samples, features).

    A row holds ``sampler``, ``value``, the metrics, and the seconds spent sampling and
    evaluating.
    """
    extractor = extractor or InceptionExtractor()
    chosen = sweep_metrics(metrics, reference, extractor.has_logits, n, k)
    for point in tqdm(points, desc="sweep", unit="point", disable=not progress):
        started = time.perf_counter()
        samples = generate(
            point.stage, n, seed=seed, classes=classes, batch_size=batch_size, progress=progress
        )
        sampled = time.perf_counter()
        results = evaluate(
            samples.images,
            reference,
            metrics=chosen,
            extractor=extractor,
            k=k,
            progress=progress,
        )
        row = {
            "sampler": point.sampler,
            "value": point.value,
            **results,
            "sampling_seconds": sampled - started,
            "evaluation_seconds": time.perf_counter() - sampled,
        }
        yield point, samples, row


def run_sweep(points: Sequence[SweepPoint], reference: ReferenceStatistics, n: int, **options):
    """The rows of :func:`iter_sweep` (same arguments), without the samples."""
    return [row for _, _, row in iter_sweep(points, reference, n, **options)]


def write_sweep(
    folder: str | Path,
    plan: SweepPlan,
    reference: ReferenceStatistics,
    *,
    seed: int = 0,
    metrics: str | Sequence[str] | None = None,
    extractor: InceptionExtractor | None = None,
    k: int = 3,
    record: dict | None = None,
    progress: bool = True,
) -> tuple[list[dict], list[str]]:
    """Run a planned sweep into ``folder`` (new or empty, as :data:`LAYOUT` checks it).

    Each point's samples go to ``samples/<sampler>_<param>_<value>.npz`` (arr_0: uint8
    NHWC images, arr_1: labels) as soon as they are drawn; then sweep.json (the settings,
    ``record``, the reference's and the network's identity, and the rows), sweep.csv and
    the plots (:func:`save_sweep`). seed, metrics, extractor, k and progress are as
    :func:`iter_sweep` takes them; ``record`` names the checkpoints used (e.g.
    ``LoadedCheckpoint.record()``). Returns the rows and the names of the files written
    beside ``samples``.
    """
    folder = LAYOUT.check(folder, overwrite=False)
    extractor = extractor or InceptionExtractor()
    metrics = sweep_metrics(metrics, reference, extractor.has_logits, plan.n, k)
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    rows = []
    for point, samples, row in iter_sweep(
        plan.points,
        reference,
        plan.n,
        seed=seed,
        classes=plan.classes,
        batch_size=plan.batch_size,
        metrics=metrics,
        extractor=extractor,
        k=k,
        progress=progress,
    ):
        arrays = {"arr_0": samples.images}
        if samples.labels is not None:
            arrays["arr_1"] = samples.labels
        np.savez(folder / "samples" / f"{point.sampler}_{plan.param}_{point.value:g}.npz", **arrays)
        rows.append(row)
    base, steps = plan.base, plan.param == "steps"
    info = {
        **(record or {}),
        "samplers": plan.samplers,
        "values": plan.values,
        "spacing": plan.spacing if steps else None,
        "steps": None if steps else {p.sampler: p.stage.sampler.respacing for p in plan.points},
        "eta": base.sampler.eta,
        "cfg": base.cfg,
        "cfg_interval": base.cfg_interval,
        "classifier_scale": None if base.classifier is None else base.classifier_scale,
        "classes": plan.classes,
        "n": plan.n,
        "seed": seed,
        "reference": reference.info,
        "network_sha256": extractor.sha256,
        "k": k,
    }
    return rows, save_sweep(folder, rows, plan.param, info)


def save_sweep(folder: str | Path, rows: Sequence[dict], param: str, info: dict) -> list[str]:
    """Write sweep.json (``info`` and the rows), sweep.csv and a plot per metric present
    into ``folder``; returns the names of the files written."""
    folder = Path(folder)
    atomic_write_json(folder / SWEEP_FILE, {**info, "param": param, "points": list(rows)})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / "sweep.csv", buffer.getvalue())
    written = [SWEEP_FILE, "sweep.csv"]
    samplers = list(dict.fromkeys(row["sampler"] for row in rows))
    for name, ylabel, columns in PLOTS:
        if columns[0] not in rows[0]:
            continue
        series = {}
        for sampler in samplers:
            mine = [row for row in rows if row["sampler"] == sampler]
            for column in columns:
                label = f"{sampler} {column}" if len(columns) > 1 else sampler
                series[label] = [row[column] for row in mine]
        x = [row["value"] for row in rows if row["sampler"] == samplers[0]]
        plot_lines(
            folder / name,
            x,
            series,
            xlabel=AXIS_LABELS[param],
            ylabel=ylabel,
            title=f"{ylabel} against {AXIS_LABELS[param]}",
            logx=param in ("steps", "guidance-interval") and min(x) > 0,
        )
        written.append(name)
    return written
