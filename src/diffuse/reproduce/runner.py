"""Run claims: train their models, draw their samples, measure, check, write the results.

Every piece of work is found and reused when it was finished before, so the suite can be
stopped at any moment and run again, in pieces, across days:

- a model whose run holds the checkpoint of its last step is done; a run stopped earlier
  (SIGINT/SIGTERM save a checkpoint; a killed one falls back to its latest) is resumed
  with ``diffuse train --resume``'s machinery; a run trained with other settings than
  declared is refused, never replaced;
- a sample set (``.work/samples``), a score (``scores/``) and a figure are reused when
  their file exists: their names are digests of everything that made them;
- a claim's ``result.json`` is rewritten from its scores each time it is run;
- a model is trained only for a claim that still lacks a score of it. Its run's
  checkpoints stay on the machine that trained it (``.work``, not committed): another
  machine trains it again, from scratch, as its *second training*, whose scores are named
  apart from the first's, so that every score of a claim comes from one training of each
  model (the first training's are never mixed in; they are measured again). A claim's
  models are trained one at a time, each followed by its scores, so a session that ends
  loses only the training under way.

Each model record adds up the wall and CPU minutes of every piece of its training; each
score records those of its sampling and evaluation; every record carries the code's
commit and the CPU (:func:`~diffuse.reproduce.store.provenance`).
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from diffuse.checkpoint import load_checkpoint
from diffuse.errors import ConfigError
from diffuse.eval.evaluate import SmallSampleWarning, evaluate
from diffuse.eval.features import InceptionExtractor
from diffuse.eval.nll import measure_nll
from diffuse.eval.reference import dataset_reference, reference_images
from diffuse.io import atomic_path
from diffuse.plots import plot_lines, plot_rate_distortion
from diffuse.rendering import save_png
from diffuse.reproduce.plan import (
    Claim,
    Curve,
    Likelihood,
    Measured,
    ModelPlan,
    Plot,
    Progressive,
    Reference,
    Sampling,
    Verdict,
    check_scale,
)
from diffuse.reproduce.store import Stopwatch, Store, provenance
from diffuse.sample import SamplerSettings, Samples, Stage, generate, progressive
from diffuse.sample.models import load_classifier, load_diffusion_model
from diffuse.train import RunFolder, resume, train
from diffuse.train.spec import RunSpec
from diffuse.train.state import step_folder

SAMPLE_BATCH = 250
K = 3  # precision/recall neighbourhood (Kynkaanniemi et al. 2019; ADM's evaluator)
NOISE_REPLICATES = 20  # bootstrap resamples behind fid_sd, halvings behind precision_sd, recall_sd


class SuiteInterrupted(Exception):
    """Training stopped by SIGINT/SIGTERM (its checkpoint saved): run the suite again to
    continue.

    signal: "SIGINT" or "SIGTERM".
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal = signal_name


@dataclass(frozen=True)
class Results:
    """What a claim's check reads.

    quality:    one row per :class:`Quality` point: ``series``, ``x`` and the metrics.
    likelihood: rows of the :class:`Likelihood` items by series: ``bpd``, ``stderr``, ...
    curves:     rows of the :class:`Curve` items by series: ``steps``, ``values``, ``noise``.
    floor:      the real images' row (their FID against the reference).
    """

    quality: Sequence[Mapping[str, Any]]
    likelihood: Mapping[str, Mapping[str, Any]]
    curves: Mapping[str, Mapping[str, Any]]
    floor: Mapping[str, Any] | None

    def point(self, series: str, x: float) -> Mapping[str, Any]:
        """The quality row of ``series`` at ``x``."""
        for row in self.quality:
            if row["series"] == series and row["x"] == x:
                return row
        raise KeyError(f"no quality point {series!r} at {x}")

    def measured(self, series: str, x: float, metric: str) -> Measured:
        """A quality ``metric`` ("fid", "precision", "recall") of ``series`` at ``x`` with
        its noise, ``<metric>_sd`` (0 for a score kept from before scores had one, whose
        samples are gone)."""
        row = self.point(series, x)
        return Measured(float(row[metric]), float(row.get(f"{metric}_sd", 0.0)))

    def fid(self, series: str, x: float) -> Measured:
        """The FID of ``series`` at ``x`` with its bootstrap noise."""
        return self.measured(series, x, "fid")

    def nll(self, series: str) -> float:
        """The bits/dim of ``series``, without a noise: every model is measured on the same
        test images, so the standard error of each (over the images) says nothing of the
        noise of a difference between two, which the paired images mostly cancel."""
        return float(self.likelihood[series]["bpd"])


class Suite:
    """Runs claims into a root folder.

    root:      the root folder (:mod:`diffuse.reproduce.store`).
    models:    the models the claims may name, by name.
    scale:     budget scale: every model trains ``round(steps * scale)`` steps.
    progress:  show progress bars.
    say:       prints a line of progress.

    :attr:`written` collects the records written since :meth:`take_written` was last
    called (``--commit`` commits them).
    """

    def __init__(
        self,
        root: str | Path,
        models: Mapping[str, ModelPlan],
        *,
        scale: float = 1.0,
        progress: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        self.store = Store(root)
        self.models = models
        self.scale = check_scale(scale)
        self.progress = progress
        self.written: list[Path] = []
        self.say = say
        self._extractor: InceptionExtractor | None = None
        self._references: dict[Reference, Any] = {}

    # ------------------------------------------------------------------ models

    def take_written(self) -> list[Path]:
        """The records written since the last call, each once."""
        written, self.written = list(dict.fromkeys(self.written)), []
        return written

    def check(self, claims: Iterable[Claim]) -> None:
        """Raise :class:`ConfigError` for a model of ``claims`` that cannot be trained as
        declared (a setting its preset refuses) or was trained with other settings, before
        any work."""
        for claim in claims:
            for name in claim.models:
                self.plan(name).spec(self.scale).diffusion.build()
                self._check_declared(name)

    def plan(self, name: str) -> ModelPlan:
        if name not in self.models:
            raise ConfigError(f"unknown model {name!r}; declared: {', '.join(self.models)}")
        return self.models[name]

    def training(self, name: str) -> str:
        """Which training of model ``name`` a score comes from, as its identity names it:
        the run folder for the first training, "<folder> (training N)" for the N-th time it
        was trained from scratch (:mod:`module docstring <diffuse.reproduce.runner>`)."""
        folder = self.plan(name).folder(self.scale)
        trainings = len(self._trainings(folder))
        return folder if trainings <= 1 else f"{folder} (training {trainings})"

    def _trainings(self, folder: str) -> list[list[dict]]:
        """The pieces of each training from scratch in a model's record, in order."""
        record = self.store.read(self.store.model_record(folder)) or {"pieces": []}
        trainings: list[list[dict]] = []
        for piece in record["pieces"]:
            if piece["first_step"] == 0 or not trainings:
                trainings.append([])
            trainings[-1].append(piece)
        return trainings

    def trained(self, name: str) -> Path:
        """The final checkpoint of model ``name``, trained (or its training continued) first
        when it is not there yet; raises :class:`SuiteInterrupted` when a signal stops it."""
        plan = self.plan(name)
        folder = plan.folder(self.scale)
        spec, run = plan.spec(self.scale), self.store.run(folder)
        final = step_folder(run, spec.train.steps)
        record_path = self.store.model_record(folder)
        record = self.store.read(record_path) or {
            "model": name,
            "description": plan.description,
            "preset": plan.preset,
            "data": plan.data,
            "settings": dict(plan.settings),
            "steps": spec.train.steps,
            "spec": spec.to_dict(),
            "pieces": [],
            "finished": False,
        }
        self._check_declared(name)
        if not final.is_dir():
            record = self._train_piece(name, spec, run, record, record_path)
        if not record["finished"]:
            record["finished"] = True
            self.store.write(record_path, record)
            self.written.append(record_path)
        return final

    def _check_declared(self, name: str) -> None:
        """Raise :class:`ConfigError` when model ``name``'s run, or its record (which a
        clean clone has without the run), was trained with other settings than declared
        now: its scores would be taken for the declared model's."""
        plan = self.plan(name)
        folder = plan.folder(self.scale)
        wanted = plan.spec(self.scale).to_dict()
        run, record_path = self.store.run(folder), self.store.model_record(folder)
        record = self.store.read(record_path)
        found = []
        if RunFolder(run).run_file.is_file():
            found.append((f"{run} holds a run", RunFolder(run).read_spec().to_dict()))
        if record is not None and "spec" in record:
            found.append((f"{record_path} records", RunSpec.from_dict(record["spec"]).to_dict()))
        for where, saved in found:
            if saved != wanted:
                changed = _differences(saved, wanted)
                raise ConfigError(
                    f"{where} of model {name} trained with other settings than declared now "
                    f"({'; '.join(changed[:3])}); move it and the scores of the model away "
                    "to train it again, or use another --root"
                )

    def _train_piece(self, name, spec, run: Path, record: dict, record_path: Path) -> dict:
        started = RunFolder(run).run_file.is_file()
        self.say(
            f"model {name}: {'resuming' if started else 'training'} ({spec.train.steps} steps)"
        )
        self.store.make_work()
        with Stopwatch() as watch:
            if started:
                result = resume(run, progress=self.progress)
            else:
                result = train(spec, run, progress=self.progress)
        record["pieces"].append(
            {
                "first_step": result.first_step,
                "step": result.step,
                "interrupted": result.interrupted,
                **watch.minutes(),
                **provenance(),
            }
        )
        record["finished"] = result.interrupted is None  # also when training it again
        self.store.write(record_path, record)
        self.written.append(record_path)
        if result.interrupted:
            raise SuiteInterrupted(result.interrupted)
        return record

    # ------------------------------------------------------------------ samples

    def _stage(
        self,
        checkpoint: Path,
        sampler: str,
        steps: str,
        eta: float = 0.0,
        *,
        upsampler: bool = False,
        variance: str | None = None,
        classifier: Path | None = None,
        **guidance,
    ) -> Stage:
        """The stage of a trained model: its EMA weights, the sampler, a fixed variance in
        place of its own, a classifier's guidance (``guidance``: cfg, classifier_scale).
        It samples in float32, as the models are trained (:meth:`ModelPlan.spec`): a
        sample set is the same on every machine, where ``auto`` would pick bf16 on some."""
        loaded = load_diffusion_model(checkpoint, upsampler=upsampler)
        diffusion = loaded.diffusion
        if variance is not None:
            diffusion = replace(diffusion, variance=variance)
        if classifier is not None:
            guidance["classifier"] = load_classifier(classifier, loaded.diffusion).model
        settings = SamplerSettings(sampler, steps, eta)
        return Stage(loaded.model, diffusion, settings, precision="fp32", **guidance)

    def sample_identity(self, sampling: Sampling) -> dict:
        """What makes a sample set: its settings and the runs of its models."""
        trainings = {name: self.training(name) for name in sampling.models}
        return {"sampling": asdict(sampling), "models": trainings}

    def samples(self, sampling: Sampling) -> tuple[Samples, dict]:
        """The sample set (made now, or read back) and the cost of making it."""
        identity = self.sample_identity(sampling)
        path = self.store.samples(identity)
        if path.is_file():
            return _read_samples(path)
        checkpoints = {name: self.trained(name) for name in sampling.models}
        base = self._stage(
            checkpoints[sampling.model],
            sampling.sampler,
            sampling.steps,
            sampling.eta,
            variance=sampling.variance,
            classifier=checkpoints.get(sampling.classifier),
            cfg=sampling.cfg,
            classifier_scale=sampling.classifier_scale,
        )
        upsampler = None
        if sampling.upsampler is not None:
            upsampler = self._stage(
                checkpoints[sampling.upsampler],
                sampling.upsampler_sampler,
                sampling.upsampler_steps,
                upsampler=True,
            )
        classes = None if base.label_classes is None else list(range(base.label_classes))
        start = None
        if sampling.skip:
            start = round((1.0 - sampling.skip) * base.process.num_timesteps) - 1
        self.say(f"sampling {sampling.n} images of {sampling.model} ({_describe(sampling)})")
        with Stopwatch() as watch:
            samples = generate(
                base,
                sampling.n,
                seed=sampling.seed,
                classes=classes,
                batch_size=SAMPLE_BATCH,
                upsampler=upsampler,
                start_step=start,
                progress=self.progress,
            )
        cost = watch.minutes()
        arrays = {"arr_0": samples.images, "cost": json.dumps(cost)}
        if samples.labels is not None:
            arrays["arr_1"] = samples.labels
        self.store.make_work()
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        return samples, cost

    # ------------------------------------------------------------------ scores

    @property
    def extractor(self) -> InceptionExtractor:
        if self._extractor is None:
            self._extractor = InceptionExtractor()
        return self._extractor

    def metrics(self) -> tuple[str, ...]:
        """FID and precision/recall; the Inception Score too where the weights have logits."""
        return ("fid", "pr", "is") if self.extractor.has_logits else ("fid", "pr")

    def reference(self, reference: Reference):
        """The reference statistics (from diffuse's cache, computed on first use)."""
        if reference not in self._references:
            self._references[reference] = dataset_reference(
                reference.data,
                metrics=("fid", "pr"),
                split=reference.split,
                n=reference.n,
                image_size=reference.image_size,
                extractor=self.extractor,
                progress=self.progress,
                report=self.say,
            )
        return self._references[reference]

    def _evaluate(
        self, images, reference: Reference, metrics: tuple[str, ...] | None = None
    ) -> tuple[dict, dict]:
        """The metrics (default: :meth:`metrics`) of uint8 images against ``reference``,
        FID with its bootstrap noise ``fid_sd``, and the minutes they took. FID from fewer
        images than the 2048 feature dimensions is biased upwards: the suite compares only
        FIDs of equal counts (its floor included), so the warning that says so is not
        repeated for every score."""
        reference_stats = self.reference(reference)
        with Stopwatch() as watch, warnings.catch_warnings():
            warnings.simplefilter("ignore", SmallSampleWarning)
            values = evaluate(
                images,
                reference_stats,
                metrics=metrics or self.metrics(),
                extractor=self.extractor,
                k=K,
                replicates=NOISE_REPLICATES,
                progress=self.progress,
            )
        return values, watch.minutes()

    def _with_noise(
        self, path: Path, record: dict, images: Callable[[], Any], reference: Reference
    ) -> dict:
        """A score kept from before scores had the noise of each metric (``fid_sd``;
        ``precision_sd`` and ``recall_sd``), with what it lacks added from its images,
        ``images()``, and the commit that added it (``<metric>_sd_commit``); its other
        values kept as they were. As it was when ``images()`` is None (a clean clone has
        the scores, not the samples)."""
        lacking = tuple(
            metric
            for metric, key in (("fid", "fid"), ("pr", "precision"))
            if key in record and f"{key}_sd" not in record
        )
        if not lacking:
            return record
        found = images()
        if found is None:
            return record
        values, _ = self._evaluate(found, reference, metrics=lacking)
        added = {key: value for key, value in values.items() if key.endswith("_sd")}
        commit = provenance()["commit"]
        record = {**record, **added, **{f"{key}_commit": commit for key in added}}
        self.store.write(path, record)
        self.written.append(path)
        return record

    def _score_identity(self, what: dict, reference: Reference) -> dict:
        return {**what, "reference": asdict(reference), "network": self.extractor.tag, "k": K}

    def _quality_score(self, sampling: Sampling, reference: Reference) -> tuple[dict, Path]:
        identity = self._score_identity(self.sample_identity(sampling), reference)
        return identity, self.store.score("quality", identity)

    def quality(self, sampling: Sampling, reference: Reference) -> dict:
        """Sample quality of a sample set against ``reference`` (a score, reused)."""
        identity, path = self._quality_score(sampling, reference)
        found = self.store.read(path)
        if found is not None:
            kept = self.store.samples(self.sample_identity(sampling))

            def kept_images():
                return _read_samples(kept)[0].images if kept.is_file() else None

            return self._with_noise(path, found, kept_images, reference)
        samples, sampling_cost = self.samples(sampling)
        values, evaluation_cost = self._evaluate(samples.images, reference)
        record = {
            "kind": "quality",
            **identity,
            "n": len(samples.images),
            **values,
            "sampling_cost": sampling_cost,
            "evaluation_cost": evaluation_cost,
            **provenance(),
        }
        self.store.write(path, record)
        self.written.append(path)
        return record

    def floor(self, real: Reference, reference: Reference) -> dict:
        """Real images measured as if they were samples: the best FID the count allows."""
        identity = self._score_identity({"real": asdict(real)}, reference)
        path = self.store.score("floor", identity)
        found = self.store.read(path)

        def real_images():
            return reference_images(
                real.data, split=real.split, n=real.n, image_size=real.image_size, progress=False
            )

        if found is not None:
            return self._with_noise(path, found, real_images, reference)
        images = real_images()
        values, evaluation_cost = self._evaluate(images, reference)
        record = {
            "kind": "floor",
            **identity,
            "n": len(images),
            **values,
            "evaluation_cost": evaluation_cost,
            **provenance(),
        }
        self.store.write(path, record)
        self.written.append(path)
        return record

    def _likelihood_score(self, item: Likelihood) -> tuple[dict, Path]:
        identity = {
            "model": self.training(item.model),
            "variance": item.variance,
            "n": item.n,
            "data": self.plan(item.model).data,
            "split": "test",
            "seed": 0,
            "clip_denoised": True,
        }
        return identity, self.store.score("nll", identity)

    def likelihood(self, item: Likelihood) -> dict:
        """Bits/dim of the first test images under a model (a score, reused)."""
        identity, path = self._likelihood_score(item)
        plan = self.plan(item.model)
        found = self.store.read(path)
        if found is not None:
            return found
        loaded = load_checkpoint(self.trained(item.model))
        if item.variance is not None:
            loaded = replace(loaded, diffusion=replace(loaded.diffusion, variance=item.variance))
        self.say(f"bits/dim of {item.n} test images under {item.model}")
        with Stopwatch() as watch:
            measured = measure_nll(
                loaded, plan.data, split="test", n=item.n, progress=self.progress
            )
        summary = {k: v for k, v in measured.summary.items() if k != "checkpoint"}
        record = {
            "kind": "nll",
            **identity,
            **summary,
            "rate_distortion": measured.rate_distortion,
            "cost": watch.minutes(),
            **provenance(),
        }
        self.store.write(path, record)
        self.written.append(path)
        return record

    def _curve_score(self, item: Curve) -> tuple[dict, Path]:
        identity = {"model": self.training(item.model), "statistic": list(item.statistic)}
        return identity, self.store.score("curve", identity)

    def curve(self, item: Curve) -> dict:
        """A statistic training logged at every step, with its noise (a score, reused)."""
        identity, path = self._curve_score(item)
        found = self.store.read(path)
        if found is not None:
            return found
        run = self.trained(item.model).parents[1]
        lines = RunFolder(run).metrics_file.read_text(encoding="utf-8").splitlines()
        logged = [json.loads(line) for line in lines if line.strip()]
        key = next((k for k in item.statistic if any(k in entry for entry in logged)), None)
        if key is None:
            raise ConfigError(
                f"the training log of {item.model} holds none of {', '.join(item.statistic)}"
            )
        rows = [(entry["step"], entry[key]) for entry in logged if key in entry]
        values = [value for _, value in rows]
        record = {
            "kind": "curve",
            **identity,
            "key": key,
            "steps": [step for step, _ in rows],
            "values": values,
            "noise": step_noise(values[len(values) // 2 :]),
            "final": statistics.fmean(values[-max(1, len(values) // 10) :]),
            "lowest": min(values),
            **provenance(),
        }
        self.store.write(path, record)
        self.written.append(path)
        return record

    def figure(self, claim: Claim, item: Progressive) -> Path:
        """DDPM Fig. 6 of a model into the claim's folder (reused when there)."""
        path = self.store.claim_file(claim.name, _figure_file(item))
        if path.is_file():
            return path
        stage = self._stage(self.trained(item.model), item.sampler, item.steps)
        classes = None if stage.label_classes is None else list(range(stage.label_classes))
        figure = progressive(
            stage, item.n, classes=classes, columns=item.columns, progress=self.progress
        )
        save_png(path, figure.render())
        self.written.append(path)
        return path

    # ------------------------------------------------------------------ claims

    def run(self, claim: Claim, estimated_minutes: float | None = None) -> dict:
        """Everything ``claim`` needs (reusing what was done), then its result: checked,
        plotted and written to ``<claim>/result.json``. A result that comes out as the one
        already there (but for when and where it was computed) is left as it was."""
        self.say(f"claim {claim.number} ({claim.name}): {claim.title}")
        floor = None if claim.floor is None else self.floor(claim.floor, claim.reference)
        untrained = self._models_with_work_left(claim)
        while untrained:
            self.trained(untrained.pop(0))
            self._measure(claim, waiting=set(untrained))
        quality, likelihood, curves, figures = self._measure(claim, waiting=set())
        results = Results(quality, likelihood, curves, floor)
        verdict: Verdict = claim.check(results)
        result = {
            "claim": claim.name,
            "number": claim.number,
            "title": claim.title,
            "source": claim.source,
            "paper": claim.paper,
            "trend": claim.trend,
            "budget_scale": self.scale,
            "verdict": {
                "holds": verdict.holds,
                "summary": verdict.summary(),
                "parts": [asdict(part) for part in verdict.parts],
            },
            "reference": None if claim.reference is None else claim.reference.describe(),
            "floor": _short(floor),
            "quality": [_short(row) for row in quality],
            "likelihood": {k: _short(v) for k, v in likelihood.items()},
            "curves": {k: _short(v) for k, v in curves.items()},
            "models": {name: self._model_summary(name) for name in claim.models},
            "files": sorted(
                [*(path.name for path in figures), *(plot.file for plot in claim.plots)]
            ),
            "cost": {
                "estimated_minutes": estimated_minutes,
                **self._cost(claim, [*quality, *likelihood.values()]),
            },
            "command": command(claim.name, self.scale),
            **provenance(),
        }
        path = self.store.result(claim.name)
        plots = [self.store.claim_file(claim.name, plot.file) for plot in claim.plots]
        kept = self.store.read(path)
        if (
            kept is None
            or _findings(kept) != _findings(result)
            or not all(p.is_file() for p in plots)
        ):
            for plot in claim.plots:
                self._plot(claim, plot, results)
            self.store.write(path, result)
            self.written += [path, *plots]
            kept = result
        self.say(f"claim {claim.number} ({claim.name}): {verdict.summary()}")
        return kept

    def forget_measurements(self, claim: Claim) -> list[Path]:
        """Delete ``claim``'s sample sets, scores and figures, keeping its models and its
        floor, so that the next :meth:`run` draws and measures them again. For after a fix
        to sampling or measuring: a record's name is a digest of its settings and its
        models' trainings, not of the code that made it, so a fixed sampler would find the
        old sample sets and reuse them. Returns the deleted records (``--commit`` commits
        their removal)."""
        records = [path for path, _ in self._records(claim)]
        samples = [self.store.samples(self.sample_identity(p.sampling)) for p in claim.quality]
        for path in [*records, *samples]:
            path.unlink(missing_ok=True)
        self.say(f"claim {claim.number} ({claim.name}): its samples and scores are made again")
        self.written += records
        return records

    def _measure(self, claim: Claim, waiting: set[str]) -> tuple[list, dict, dict, list]:
        """The scores and figures of ``claim`` made from models none of which is in
        ``waiting``: the quality rows, the likelihoods and curves by series, the figures.

        :meth:`run` calls it after each model it trains, so that a model's scores are
        measured while its checkpoint is on this machine: a session that ends keeps every
        model's scores but those of the one being trained. A model is trained before any
        of its scores is named, since training it again renames them.
        """

        def ready(*models: str) -> bool:
            return waiting.isdisjoint(models)

        quality = [
            {"series": p.series, "x": p.x, **self.quality(p.sampling, claim.reference)}
            for p in claim.quality
            if ready(*p.sampling.models)
        ]
        likelihood = {
            item.series: self.likelihood(item) for item in claim.likelihood if ready(item.model)
        }
        curves = {item.series: self.curve(item) for item in claim.curves if ready(item.model)}
        figures = [self.figure(claim, item) for item in claim.figures if ready(item.model)]
        return quality, likelihood, curves, figures

    def _records(self, claim: Claim) -> list[tuple[Path, Sequence[str]]]:
        """Every score and figure of ``claim``: its file, and the models it is made from."""
        return [
            *(
                (self._quality_score(p.sampling, claim.reference)[1], p.sampling.models)
                for p in claim.quality
            ),
            *((self._likelihood_score(item)[1], (item.model,)) for item in claim.likelihood),
            *((self._curve_score(item)[1], (item.model,)) for item in claim.curves),
            *(
                (self.store.claim_file(claim.name, _figure_file(item)), (item.model,))
                for item in claim.figures
            ),
        ]

    def _models_with_work_left(self, claim: Claim) -> list[str]:
        """The models of ``claim`` that a score or figure it still lacks is made from."""
        needed = {
            name for path, models in self._records(claim) if not path.is_file() for name in models
        }
        return [name for name in claim.models if name in needed]

    def _model_summary(self, name: str) -> dict:
        """The run of model ``name`` behind the claim's scores, the cost of its training."""
        plan = self.plan(name)
        trainings = self._trainings(plan.folder(self.scale))
        pieces = trainings[-1] if trainings else []
        return {
            "folder": self.training(name),
            "steps": plan.steps_at(self.scale),
            "wall_minutes": round(sum(p["wall_minutes"] for p in pieces), 3),
            "cpu_minutes": round(sum(p["cpu_minutes"] for p in pieces), 3),
            "pieces": len(pieces),
        }

    def _cost(self, claim: Claim, scores: Iterable[Mapping[str, Any]]) -> dict:
        """Wall and CPU minutes of a claim: its models' training, its samples and scores
        (each counted in full, also where another claim shares it)."""
        totals = {"wall_minutes": 0.0, "cpu_minutes": 0.0}
        pieces = [self._model_summary(name) for name in claim.models]
        for score in scores:
            pieces += [score.get(k) or {} for k in ("sampling_cost", "evaluation_cost", "cost")]
        for piece in pieces:
            for key in totals:
                totals[key] += piece.get(key, 0.0)
        return {key: round(value, 2) for key, value in totals.items()}

    def _plot(self, claim: Claim, plot: Plot, results: Results) -> Path:
        path = self.store.claim_file(claim.name, plot.file)
        if plot.metric == "rate_distortion":
            rows = next(iter(results.likelihood.values()))["rate_distortion"]
            plot_rate_distortion(path, rows)
            return path
        if plot.metric == "curve":
            curves = list(results.curves.items())
            length = min(len(row["values"]) for _, row in curves)
            steps = curves[0][1]["steps"][:length]
            x = [round(step / steps[-1], 2) for step in steps] if plot.fraction else steps
            series = {name: row["values"][:length] for name, row in curves}
            ylabel = curves[0][1]["key"]
        else:
            names = list(dict.fromkeys(row["series"] for row in results.quality))
            x = sorted({row["x"] for row in results.quality})
            series = {
                name: [_value(results, name, value, plot.metric) for value in x] for name in names
            }
            ylabel = plot.metric
        title = f"claim {claim.number}: {claim.name}"  # the source is too long for a title
        plot_lines(
            path,
            x,
            series,
            xlabel=plot.xlabel,
            ylabel=ylabel,
            title=title,
            logx=plot.logx,
            logy=plot.logy,
        )
        return path


PROVENANCE = ("commit", "cpu", "threads", "torch", "date")


def _findings(result: Mapping[str, Any]) -> dict:
    """A claim's result without when and where it was computed, as JSON reads it back."""
    return {k: v for k, v in json.loads(json.dumps(result)).items() if k not in PROVENANCE}


def _value(results: Results, series: str, x: float, metric: str) -> float:
    try:
        return float(results.point(series, x).get(metric, math.nan))
    except KeyError:
        return math.nan


def step_noise(values: Sequence[float]) -> float:
    """The relative noise of a per-step estimate: the standard deviation of consecutive
    differences over sqrt(2) (a slow trend cancels in them), over the mean."""
    if len(values) < 3:
        return math.nan
    differences = np.diff(np.asarray(values, dtype=np.float64))
    return float(differences.std(ddof=1) / math.sqrt(2) / abs(np.mean(values)))


def command(name: str, scale: float) -> str:
    """The command that reruns a claim."""
    return f"diffuse reproduce {name}" + ("" if scale == 1 else f" --budget-scale {scale:g}")


SHORT_DROPPED = ("per_image", "rate_distortion", "values", "steps", "sampling", "models")


def _figure_file(item: Progressive) -> str:
    return f"progressive-{item.model}.png"


def _read_samples(path: Path) -> tuple[Samples, dict]:
    """A kept sample set and the cost of making it."""
    with np.load(path, allow_pickle=False) as data:
        labels = data["arr_1"] if "arr_1" in data.files else None
        return Samples(data["arr_0"], labels), json.loads(str(data["cost"]))


def _short(row: Mapping[str, Any] | None) -> dict | None:
    """A score as a claim's result shows it: without its long lists."""
    if row is None:
        return None
    return {k: v for k, v in row.items() if k not in SHORT_DROPPED}


def _describe(sampling: Sampling) -> str:
    parts = [f"{sampling.sampler} {sampling.steps}"]
    if sampling.eta:
        parts.append(f"eta {sampling.eta:g}")
    if sampling.variance:
        parts.append(sampling.variance)
    if sampling.cfg is not None:
        parts.append(f"cfg {sampling.cfg:g}")
    if sampling.classifier:
        parts.append(f"classifier scale {sampling.classifier_scale:g}")
    if sampling.skip:
        parts.append(f"{sampling.skip:.0%} skipped")
    if sampling.upsampler:
        parts.append(f"upsampled by {sampling.upsampler}")
    return ", ".join(parts)


def _differences(saved: Mapping, wanted: Mapping, prefix: str = "") -> list[str]:
    """The settings that differ between two run descriptions, as "key: saved -> wanted"."""
    found = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found
