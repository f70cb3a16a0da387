"""The training loop, shared by diffusion models, upsamplers and noisy classifiers.

One step: take the step's global batch (:class:`~diffuse.train.randomness.BatchOrder`),
keep this process's rows (read ahead in worker processes when a folder's images are
decoded on demand), draw the step's timesteps, noise, flips and label drops, run
the rows through the network in micro-batches accumulating gradients, average over
processes (DDP), skip the step if the loss is not finite, clip the gradients, take an
AdamW step at the step's learning rate, update the EMA weights and the importance
sampler. Process 0 logs, writes checkpoints and sample grids, measures FID when asked
(:mod:`diffuse.train.fid_tracking`, keeping the best checkpoint in RUN/best), and saves a
checkpoint when SIGINT or SIGTERM arrives.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from diffuse import autoprecision
from diffuse.data import ImageDataset
from diffuse.data.readahead import read_ahead
from diffuse.errors import CheckpointError, ConfigError
from diffuse.nn import build_network
from diffuse.rendering import save_png
from diffuse.train import autocompile, randomness
from diffuse.train.distributed import ProcessGroup
from diffuse.train.ema import EMA
from diffuse.train.fid_tracking import FidTracker, check_fid_settings, evaluation_due
from diffuse.train.interrupt import StopRequest
from diffuse.train.objectives import QUARTERS, objective_for
from diffuse.train.optim import build_optimizer, learning_rate
from diffuse.train.precision import AutocastModel, Precision
from diffuse.train.preview import preview_grid
from diffuse.train.reporting import LoopReport
from diffuse.train.run import RunFolder
from diffuse.train.spec import RunSpec
from diffuse.train.state import (
    Progress,
    TrainingState,
    load_training_checkpoint,
    prune_checkpoints,
    remove_stale_temporaries,
    save_training_checkpoint,
    step_folder,
)
from diffuse.train.tracking import check_trackers

clock = time.perf_counter  # times the steps; a module attribute, so that a test can fake it


@dataclass(frozen=True)
class TrainResult:
    """What a call to :meth:`Trainer.fit` did.

    run_dir:      the run folder.
    first_step:   the step training started (or resumed) at.
    step:         the steps done at the end.
    checkpoint:   the last checkpoint written.
    grid:         the last sample grid written, or None.
    interrupted:  "SIGINT" or "SIGTERM" when a signal stopped the run early, else None.
    seconds:      wall-clock time of the training steps.
    images_per_s: training images per second (all processes).
    skipped:      steps without an optimizer update (a non-finite loss, or fp16 gradients
                  the scaler found overflowing), over the whole run.
    evaluation:   statistics on held-out images at the end (a classifier's accuracy per
                  timestep quarter), or None.
    rank:         the process that returns this (0 in a single-process run).
    best:         the checkpoint of the lowest FID measured while training (RUN/best), or
                  None when FID was never measured.
    best_fid:     that FID, and best_step the step it was measured at (None without).
    """

    run_dir: Path
    first_step: int
    step: int
    checkpoint: Path | None
    grid: Path | None
    interrupted: str | None
    seconds: float
    images_per_s: float
    skipped: int
    evaluation: dict[str, float] | None = None
    rank: int = 0
    best: Path | None = None
    best_fid: float | None = None
    best_step: int | None = None


class Trainer:
    """Trains the network of a :class:`RunSpec` on ``dataset``, writing into ``run``.

    spec:       what to train (network, process, settings, data description).
    dataset:    the training images (see :func:`diffuse.train.training_data.load_training_data`).
    run:        the run folder (process 0 writes into it).
    group:      this process's place in a distributed run.
    progress:   show a progress bar (process 0).
    validation: held-out images on which process 0 evaluates the objective at the end.

    With ``train.eval_every`` set, process 0 prepares the FID measurements here (the
    Inception network and the reference statistics of ``dataset``), so that a setting or
    an input they cannot serve fails before the run writes anything.
    """

    def __init__(
        self,
        spec: RunSpec,
        dataset: ImageDataset,
        run: RunFolder,
        group: ProcessGroup,
        progress: bool = True,
        validation: ImageDataset | None = None,
    ) -> None:
        config = spec.train
        if config.batch_size % group.world_size:
            raise ConfigError(
                f"train.batch_size {config.batch_size} must be a multiple of the "
                f"{group.world_size} processes"
            )
        if group.is_main:
            check_trackers(config)  # before anything is written
        self.spec, self.dataset, self.run, self.group = spec, dataset, run, group
        self.validation = validation
        self.config = config
        self.progress_bar = progress and group.is_main
        self.device = group.device
        with randomness.seeded_global_rng(randomness.derive_seed(config.seed), self.device):
            model = build_network(spec.model).to(self.device)
        self.model = model
        self.process = spec.diffusion.build()
        self.objective = objective_for(spec, self.process)
        self.rows = randomness.shard(config.batch_size, group.rank, group.world_size)
        self.image_shape = (dataset.channels, dataset.image_size, dataset.image_size)
        decision = self._resolve_precision(config.precision)
        self.precision = Precision(decision.precision, self.device)
        # the layout "auto" timed fastest (channels_last unless it chose bf16 in NCHW),
        # set before the optimizer and the EMA copy it
        decision.apply(model)
        # The checkpoints record the precision that ran (run.json keeps the request, so a
        # resumed run decides again on its own machine).
        self.config = config = replace(config, precision=self.precision.name)
        self.state = TrainingState(
            model=model,
            ema=EMA(model, config.ema_rates, config.ema_warmup),
            optimizer=build_optimizer(model, config),
            sampler=self.objective.sampler,
            precision=self.precision,
            progress=Progress(),
        )
        self.network = model
        if group.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(model, device_ids=device_ids)
        self.eager_forward = self.forward = self.precision.wrap(self.network)
        self.compiled_forward: AutocastModel | None = None
        self.compile = autocompile.CompileChoice(config.compile)
        self.order = randomness.BatchOrder(len(dataset), config.batch_size, config.seed)
        self.fid = None
        if config.eval_every:
            check_fid_settings(spec)
            if group.is_main:
                self.fid = FidTracker(
                    spec,
                    dataset,
                    self.device,
                    batch_size=self._micro_batch(),
                    progress=progress,
                    report=print,
                )

    def _resolve_precision(self, requested: str) -> autoprecision.Decision:
        """``requested``, or for "auto" what :func:`diffuse.autoprecision.decide` measures
        for this network at this process's micro-batch; process 0 prints the decision.
        The processes of a distributed run agree on one (:func:`autoprecision.agreed`)."""
        if requested != "auto":
            return autoprecision.Decision(requested, "requested")
        batch = self._micro_batch()
        decision = autoprecision.decide(
            self.device,
            network=self.spec.model.to_dict(),
            batch=batch,
            make_workload=lambda: self._training_workload(batch),
        )
        ballot = autoprecision.votes(decision, self.group.rank).to(self.device)
        totals = self.group.all_reduce_sum(ballot).cpu()
        decision = autoprecision.agreed(decision, totals, self.group.world_size)
        if self.group.is_main:
            print(decision.message(), flush=True)
        return decision

    def _micro_batch(self) -> int:
        """Images this process runs through the network at once in a training step."""
        rows = self.rows.stop - self.rows.start
        return min(self.config.microbatch or rows, rows)

    def _training_workload(self, batch: int) -> autoprecision.Workload:
        """One forward and backward pass of a copy of the network on ``batch`` training
        images in a given precision with its weights in a given memory format: what "auto"
        times. The copies (one per format), a private global RNG (dropout) and fixed draws
        leave the run's weights and random streams untouched."""
        copy_in = autoprecision.copies_by_format(self.model)
        draw = randomness.generator(self.config.seed, randomness.EVALUATION)
        x, y = self.dataset.batch([i % len(self.dataset) for i in range(batch)], generator=draw)
        x = x.to(self.device, memory_format=torch.channels_last)
        y = y.to(self.device)
        noise = randomness.generator(self.config.seed, randomness.EVALUATION, device=self.device)
        draws = self.objective.draw(batch, self.image_shape, draw, noise, self.device)

        def step(precision: str, memory_format: torch.memory_format) -> None:
            model = copy_in(memory_format).train()
            forward = Precision(precision, self.device).wrap(model)
            model.zero_grad(set_to_none=True)
            with randomness.seeded_global_rng(self.config.seed, self.device):
                loss, _ = self.objective.losses(forward, x, y, draws)
                loss.sum().backward()

        return step

    # ----------------------------------------------------------------- set-up

    def resume(self, folder: Path) -> None:
        """Continue from the checkpoint ``folder`` of this run."""
        trainer = load_training_checkpoint(folder, self.state)
        if trainer.get("dataset_size") != len(self.dataset):
            raise CheckpointError(
                f"{folder} was trained on {trainer.get('dataset_size')} images, the data set now "
                f"holds {len(self.dataset)}; resume with the run's own data"
            )
        self.compile = autocompile.CompileChoice(self.config.compile, trainer.get("compile"))

    # ------------------------------------------------------------------- loop

    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train up to ``spec.train.steps``; returns what was done.

        stop_at: stop after this step with a checkpoint, as a stop request would, without
                 changing the schedule (which still spans ``train.steps``); resuming
                 continues exactly as if the run had not stopped.
        """
        first_step = self.state.progress.step
        if stop_at is not None and not first_step < stop_at:
            raise ConfigError(
                f"the run is at step {first_step} already: a stop at step {stop_at} must come "
                "after it"
            )
        report = LoopReport(self)
        try:
            outputs, interrupted = self._run_steps(report, stop_at or self.config.steps)
            evaluation = self._finish(outputs, report)
        finally:
            report.close()
        self.group.barrier()
        done = self.state.progress.step - first_step
        history = self.state.fid
        return TrainResult(
            run_dir=self.run.path,
            first_step=first_step,
            step=self.state.progress.step,
            checkpoint=outputs["checkpoint"],
            grid=outputs["grid"],
            interrupted=interrupted,
            seconds=report.seconds,
            images_per_s=done * self.config.batch_size / report.seconds if report.seconds else 0.0,
            skipped=self.state.progress.skipped,
            evaluation=evaluation,
            rank=self.group.rank,
            best=self.run.best if history.best_fid is not None else None,
            best_fid=history.best_fid,
            best_step=history.best_step,
        )

    def _run_steps(
        self, report: LoopReport, stop_at: int
    ) -> tuple[dict[str, Path | None], str | None]:
        """The loop: steps until the last (or ``stop_at``), a stop request or a non-finite
        loss on every process; returns the last checkpoint and grid written and the signal
        that stopped it early (``None`` when no signal did)."""
        progress = self.state.progress
        outputs: dict[str, Path | None] = {"checkpoint": None, "grid": None}
        if self._measurement_missed():
            self._measure_fid(report)
        with StopRequest() as stop, contextlib.closing(self.batches(progress.step)) as batches:
            last = min(stop_at, self.config.steps)
            while progress.step < last:
                self.forward = self._step_forward()
                started = clock()
                summary = self.train_step(progress.step, stop.signal is not None, next(batches))
                seconds = clock() - started
                report.step_done(summary, seconds)
                self._choose_compilation(seconds)
                stopping = summary["stop"] > 0 or progress.step == last < self.config.steps
                outputs.update(self._write_outputs(stopping, report))
                if stopping:
                    break
        return outputs, stop.name if progress.step < self.config.steps else None

    def _step_forward(self) -> AutocastModel:
        """The network call of the next step: compiled or eager, as ``train.compile`` says."""
        if not self.compile.compiled:
            return self.eager_forward
        if self.compiled_forward is None:
            if self.group.is_main:
                print(
                    "train.compile: compiling the training step (minutes on a CPU the first "
                    "time, then cached)",
                    flush=True,
                )
            compiled = autocompile.compile_network(self.network)
            self.compiled_forward = self.precision.wrap(compiled)
        return self.compiled_forward

    def _choose_compilation(self, seconds: float) -> None:
        """Report the step's time to the ``train.compile`` choice; process 0 prints its
        decisions. All processes decide together (compiled only where all agree)."""

        def agree(yes: bool) -> bool:
            votes = torch.tensor([float(yes)], device=self.device)
            return self.group.all_reduce_sum(votes).item() == self.group.world_size

        remaining = self.config.steps - self.state.progress.step
        message = self.compile.step_done(seconds, remaining, agree)
        if message and self.group.is_main:
            print(message, flush=True)

    def _finish(
        self, outputs: dict[str, Path | None], report: LoopReport
    ) -> dict[str, float] | None:
        """After the loop: make sure a checkpoint names the final step and, for a run that
        reached its end, measure the held-out set (``None`` when there is none)."""
        step = self.state.progress.step
        if outputs["checkpoint"] is None:  # no step taken: a finished run resumed
            latest = step_folder(self.run.path, step)
            outputs["checkpoint"] = latest if latest.is_dir() else self.save()
        if not (self.group.is_main and self.validation is not None and step == self.config.steps):
            return None
        logged = self.run.record_at(step, "test_loss")
        if logged is not None:  # a finished run resumed: measured and logged already
            return {k.removeprefix("test_"): v for k, v in logged.items() if k.startswith("test_")}
        evaluation = self.evaluate(self.validation)
        report.write({"step": step, **{f"test_{k}": v for k, v in evaluation.items()}})
        return evaluation

    def _write_outputs(self, stopping: bool, report: LoopReport) -> dict[str, Path]:
        """The FID measurement, checkpoint and sample grid due after the step just done.
        FID comes first, so that the step's checkpoint holds the best FID it made."""
        step, config = self.state.progress.step, self.config
        written = {}
        if evaluation_due(config, step, stopping):
            self._measure_fid(report)
        if stopping or step % config.checkpoint_every == 0 or step == config.steps:
            written["checkpoint"] = self.save()
        if self.group.is_main and self._preview_due(step, stopping):
            written["grid"] = self.write_preview()
        return written

    def _measurement_missed(self) -> bool:
        """Whether the step this run starts at (resumed) is due a FID measurement that it
        lacks: a stop came at that step, before its measurement, or measurements were
        switched on. Every process decides alike, from the checkpoint's state."""
        step = self.state.progress.step
        due = step > 0 and evaluation_due(self.config, step, stopping=False)
        return due and self.state.fid.last_step != step

    def _measure_fid(self, report: LoopReport) -> None:
        """Measure the EMA model (process 0), log the record and, when its FID is the
        lowest yet, write the checkpoint RUN/best; the other processes wait."""
        if self.fid is not None:
            step = self.state.progress.step
            record = self.fid.measure(self.ema_model(), step)
            report.measured(record)
            if self.state.fid.add(record["fid"], step):
                remove_stale_temporaries(self.run.best)
                self._write_checkpoint(self.run.best)
        self.group.barrier()

    def _preview_due(self, step: int, stopping: bool) -> bool:
        if self.spec.task != "diffusion" or stopping:
            return False
        every = self.config.sample_every
        return step == self.config.steps or (every > 0 and step % every == 0)

    def batches(self, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's rows of the batches of steps ``first``, ``first + 1``, ... up to
        the last: images and labels, read ahead in ``config.data_workers`` processes when the
        images are decoded on demand (a large folder). The same batches whatever the
        number of workers: each is a function of its step alone."""
        steps = range(first, self.config.steps)
        rows = ([int(i) for i in self.order.indices(step)[self.rows]] for step in steps)
        workers = 0 if self.dataset.in_memory else self.config.data_workers
        pin = self.device.type == "cuda"
        return read_ahead(self.dataset.batch, rows, workers, pin_memory=pin)

    def train_step(
        self,
        step: int,
        stop_requested: bool = False,
        images: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Train on the batch of ``step`` (``images``: this process's images and labels of
        it, already read by :meth:`batches`); returns the step's averaged statistics.

        The statistics hold ``loss`` (and the objective's other terms, overall and per
        quarter of the timestep range), ``grad_norm``, ``lr`` and ``stop`` (> 0 when any
        process asked to stop).
        """
        config, state = self.config, self.state
        batch = randomness.generator(config.seed, randomness.BATCH, step)
        noise = randomness.generator(config.seed, randomness.NOISE, step, device=self.device)
        flips = torch.rand(config.batch_size, generator=batch) < 0.5
        draws = self.objective.draw(config.batch_size, self.image_shape, batch, noise, self.device)
        draws = draws.rows(self.rows)
        if images is None:
            images = self.dataset.batch(self.order.indices(step)[self.rows])
        x, y = images
        if config.random_flip:
            x = torch.where(flips[self.rows, None, None, None], x.flip(-1), x)
        x = x.to(self.device, memory_format=torch.channels_last)
        y = y.to(self.device)
        lr = learning_rate(config, step)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        state.optimizer.zero_grad(set_to_none=True)
        stats = self._accumulate_gradients(step, x, y, draws)
        summary = self._reduce(stats, draws.t, stop_requested)
        summary["lr"] = lr
        finite = math.isfinite(summary["loss"])
        if finite:
            self.precision.unscale(state.optimizer)
            clip = config.grad_clip if config.grad_clip > 0 else math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            summary["grad_norm"] = float(norm)
            # An fp16 step the gradient scaler skips is no update: the weights, AdamW's
            # moments, the EMA and its warm-up count stay; the step still counts as done.
            if self.precision.step(state.optimizer):
                state.ema.update(state.progress.updates)
                state.progress.updates += 1
            else:
                state.progress.skipped += 1
            state.progress.consecutive_bad = 0
            self.objective.observe(draws.t, stats)
        else:
            state.optimizer.zero_grad(set_to_none=True)
            state.progress.skipped += 1
            state.progress.consecutive_bad += 1
        state.progress.step = step + 1
        if state.progress.consecutive_bad >= config.max_nonfinite:
            raise ConfigError(
                f"training diverged: the loss was not finite for {config.max_nonfinite} steps "
                f"in a row (up to step {step + 1}; {state.progress.skipped} skipped in all). "
                "Lower train.lr, keep train.grad_clip on, or use fp32/bf16; the last good "
                f"checkpoint is the latest in {self.run.checkpoints}"
            )
        return summary

    def _accumulate_gradients(self, step: int, x, y, draws) -> dict[str, torch.Tensor]:
        """Forward and backward over micro-batches; the per-example statistics, in order."""
        rows = x.shape[0]
        size = self.config.microbatch or rows
        chunks = [slice(i, min(rows, i + size)) for i in range(0, rows, size)]
        collected: dict[str, list[torch.Tensor]] = {}
        for k, chunk in enumerate(chunks):
            last = k == len(chunks) - 1
            no_sync = self.network.no_sync() if self.group.distributed and not last else None
            seed = randomness.derive_seed(
                self.config.seed, randomness.DROPOUT, step, self.group.rank, k
            )
            with (
                no_sync or contextlib.nullcontext(),
                randomness.seeded_global_rng(seed, self.device),
            ):
                loss, stats = self.objective.losses(
                    self.forward, x[chunk], y[chunk], draws.rows(chunk)
                )
                self.precision.backward(loss.sum() / rows)
            for name, value in stats.items():
                collected.setdefault(name, []).append(value)
        return {name: torch.cat(values) for name, values in collected.items()}

    def _reduce(self, stats: dict[str, torch.Tensor], t: torch.Tensor, stop: bool) -> dict:
        """Means over all processes of each statistic, overall and per timestep quarter;
        ``stop`` counts the processes that were asked to stop."""
        flag = torch.tensor([float(stop)], device=self.device)
        totals = torch.cat([flag, statistic_totals(stats, self.objective.quarter(t))])
        totals = self.group.all_reduce_sum(totals).tolist()
        return {"stop": totals[0], **statistic_means(totals[1:], sorted(stats))}

    @torch.no_grad()
    def evaluate(self, dataset: ImageDataset, batch_size: int = 256) -> dict[str, float]:
        """Mean statistics of the objective on ``dataset`` (e.g. a classifier's accuracy
        per timestep quarter on held-out images), with t and noise drawn from a fixed
        seed. Runs on this process alone, on the raw weights."""
        self.model.eval()
        forward = self.precision.wrap(self.model)
        totals, names = 0.0, []
        for start in range(0, len(dataset), batch_size):
            rows = range(start, min(len(dataset), start + batch_size))
            draw = randomness.generator(self.config.seed, randomness.EVALUATION, start)
            noise = randomness.generator(
                self.config.seed, randomness.EVALUATION, start, 1, device=self.device
            )
            draws = self.objective.draw(len(rows), self.image_shape, draw, noise, self.device)
            x, y = dataset.batch(rows)
            x = x.to(self.device, memory_format=torch.channels_last)
            _, stats = self.objective.losses(forward, x, y.to(self.device), draws)
            totals = totals + statistic_totals(stats, self.objective.quarter(draws.t))
            names = sorted(stats)
        self.model.train()
        return statistic_means(totals.tolist(), names)

    # ---------------------------------------------------------------- outputs

    def metadata(self) -> dict:
        """The checkpoint metadata: where the model came from and how to sample it."""
        return {
            "preset": self.spec.preset,
            "task": self.spec.task,
            "dataset": self.dataset.name,
            "class_names": list(self.dataset.class_names),
            "image_size": self.dataset.image_size,
            "channels": self.dataset.channels,
            "p_uncond": self.spec.p_uncond if self.spec.task == "diffusion" else 0.0,
            "cfg_weight": self.config.cfg_weight,
            "train": self.config.to_dict(),
        }

    def save(self) -> Path:
        """Write a checkpoint of the current step (process 0) and prune old ones."""
        folder = step_folder(self.run.path, self.state.progress.step)
        if self.group.is_main:
            self._write_checkpoint(folder)
            prune_checkpoints(self.run.path, self.config.keep_checkpoints)
        return folder

    def _write_checkpoint(self, folder: Path) -> None:
        """The training checkpoint of the current state, atomically, as ``folder``."""
        save_training_checkpoint(
            folder,
            self.state,
            diffusion=self.spec.diffusion,
            metadata=self.metadata(),
            extra={
                "seed": self.config.seed,
                "dataset_size": len(self.dataset),
                "compile": self.compile.decided,
            },
        )

    def ema_model(self) -> nn.Module:
        """A copy of the network in eval mode with the EMA weights of the largest rate (the
        raw weights when no EMA is kept): what previews and FID measurements sample."""
        model = copy.deepcopy(self.model).eval()
        if self.state.ema.rates:
            model.load_state_dict(self.state.ema.state(max(self.state.ema.rates)))
        return model

    def write_preview(self) -> Path:
        """Sample a grid with the EMA weights of the largest rate (else the raw weights)."""
        model = self.ema_model()
        references = None
        if self.spec.model.kind == "superres":
            references = self.dataset.batch(
                range(min(len(self.dataset), self.config.sample_columns))
            )
        grid = preview_grid(
            model,
            self.spec.diffusion,
            class_names=self.dataset.class_names,
            references=references,
            columns=self.config.sample_columns,
            sampler=self.config.sample_sampler,
            steps=self.config.sample_steps,
            cfg_weight=self.config.cfg_weight,
            seed=self.config.seed,
        )
        path = self.run.samples / f"step-{self.state.progress.step:08d}.png"
        save_png(path, grid)
        return path


def statistic_totals(stats: dict[str, torch.Tensor], quarter: torch.Tensor) -> torch.Tensor:
    """[count, count per quarter, then for each statistic (sorted by name) its sum and its
    sum per quarter]: sums that add up over processes and batches."""
    one_hot = torch.nn.functional.one_hot(quarter, QUARTERS).float()
    parts = [one_hot.new_tensor([float(len(quarter))]), one_hot.sum(0)]
    for name in sorted(stats):
        value = stats[name].float()
        parts += [value.sum()[None], value @ one_hot]
    return torch.cat(parts)


def statistic_means(totals: list[float], names: list[str]) -> dict[str, float]:
    """``{name: mean, name_q0: mean over quarter 0, ...}`` from :func:`statistic_totals`."""
    count, per_quarter = totals[0], totals[1 : 1 + QUARTERS]
    means = {}
    for i, name in enumerate(names):
        start = 1 + QUARTERS + i * (1 + QUARTERS)
        means[name] = totals[start] / count
        for q in range(QUARTERS):
            if per_quarter[q]:
                means[f"{name}_q{q}"] = totals[start + 1 + q] / per_quarter[q]
    return means
