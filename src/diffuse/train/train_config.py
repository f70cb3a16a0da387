"""The training settings: optimizer, schedule, EMA, precision, checkpoints, previews, FID.

One frozen dataclass, :class:`TrainConfig`, stored in a run's ``run.json`` and in every
checkpoint's metadata. Each field documents itself (``field_help``), so the command line
lists them in ``--help`` and takes any of them as ``--set train.<field>=<value>``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from diffuse.data.readahead import default_workers
from diffuse.errors import ConfigError, is_int_at_least
from diffuse.sample.sampler import SAMPLERS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_SETTINGS = ("auto", "on", "off")
LR_DECAYS = ("none", "linear", "cosine")
TIMESTEP_SAMPLERS = ("auto", "uniform", "loss-aware")
TENSORBOARD = ("auto", "on", "off")
MIN_EVAL_IMAGES = 4  # a covariance, and precision/recall's 3 nearest neighbours of each image


def _doc(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class TrainConfig:
    """How a network is trained. Every field is documented by its ``help`` metadata."""

    steps: int = _doc("optimizer steps to train for (the run's total, also when resuming)", 10000)
    batch_size: int = _doc("images per step, over all processes together", 128)
    microbatch: int = _doc(
        "largest batch run through the network at once per process (gradients are "
        "accumulated); 0: the whole batch",
        0,
    )
    lr: float = _doc("peak learning rate of AdamW", 1e-4)
    weight_decay: float = _doc("AdamW's decoupled weight decay", 0.0)
    adam_betas: tuple[float, float] = _doc("AdamW's (beta1, beta2)", (0.9, 0.999))
    warmup_steps: int = _doc("steps of linear learning-rate warm-up from 0", 0)
    lr_decay: str = _doc(
        "after warm-up: 'none' (constant), 'linear' or 'cosine' decay to min_lr_ratio * lr "
        "at the last step",
        "none",
    )
    min_lr_ratio: float = _doc("final learning rate of a decay, as a fraction of lr", 0.0)
    grad_clip: float = _doc("clip the gradients' global L2 norm to this; 0: no clipping", 1.0)
    ema_rates: tuple[float, ...] = _doc(
        "decay rates of the exponential moving averages of the weights (DDPM: 0.9999)",
        (0.9999,),
    )
    ema_warmup: bool = _doc(
        "the update that follows n earlier ones uses decay min(rate, (1 + n) / (10 + n)), "
        "so short runs average over their recent steps instead of their random start",
        True,
    )
    p_uncond: float | None = _doc(
        "probability of replacing a label by the null class (classifier-free guidance); "
        "None: 0.1 for a model with a null class, else 0",
        None,
    )
    timestep_sampler: str = _doc(
        "how training timesteps are drawn: 'uniform', 'loss-aware' (Improved DDPM's "
        "importance sampling) or 'auto' (loss-aware when the loss is 'kl')",
        "auto",
    )
    min_snr_gamma: float = _doc(
        "Min-SNR-gamma loss weighting (Hang et al. 2023): the MSE of each example weighted "
        "so that its x0 error counts min(SNR_t, gamma), which lowers the weight of the "
        "nearly noise-free steps (5 in the paper); 0: unweighted, DDPM's L_simple",
        0.0,
    )
    random_flip: bool = _doc("flip training images left-right with probability 1/2", False)
    workers: int | None = _doc(
        "processes that decode a folder's images ahead of the training steps (DataLoader "
        "workers); None: min(4, CPUs - 1); 0: the training process. Only the speed changes",
        None,
    )
    precision: str = _doc(
        "'auto' (bf16 where this device runs it faster, measured once and cached; see "
        "diffuse.autoprecision), 'fp32', 'bf16' (autocast, CPU or CUDA) or 'fp16' "
        "(autocast with a gradient scaler, CUDA only)",
        "auto",
    )
    compile: str = _doc(
        "'auto' (torch.compile the training step only where it is measured faster and a "
        "long run repays the compile; see diffuse.train.autocompile), 'on' or 'off'",
        "auto",
    )
    max_nonfinite: int = _doc(
        "stop with an error after this many consecutive steps with a non-finite loss "
        "(each one is skipped)",
        10,
    )
    seed: int = _doc("seed of every random draw: data order, timesteps, noise, dropout", 0)
    log_every: int = _doc("steps between lines of metrics.jsonl", 50)
    tensorboard: str = _doc(
        "TensorBoard events of the metrics in RUN/tensorboard: 'auto' (when the tensorboard "
        "package is installed), 'on' (an error if it is not) or 'off'",
        "auto",
    )
    wandb_project: str | None = _doc(
        "Weights & Biases project that also receives the metrics (needs the wandb package); "
        "None: no W&B",
        None,
    )
    checkpoint_every: int = _doc(
        "steps between checkpoints (one is always written at the end)", 1000
    )
    keep_checkpoints: int = _doc("most recent checkpoints kept in RUN/checkpoints", 3)
    sample_every: int = _doc(
        "steps between sample grids in RUN/samples (one is written at the end); 0: only at the end",
        0,
    )
    sample_columns: int = _doc("samples per row of a grid (per class when conditional)", 10)
    sample_sampler: str = _doc("sampler of the grids: 'ddim' (eta 0), 'ddpm' or 'dpm++2m'", "ddim")
    sample_steps: int = _doc("denoising steps of the grids' sampler (respaced chain)", 50)
    cfg_weight: float = _doc(
        "classifier-free guidance weight w of the grids, eps = (1+w) eps(x,c) - w eps(x) "
        "(Ho & Salimans 2021, eq. 6); used when the model has a null class",
        1.0,
    )
    eval_every: int = _doc(
        "steps between measurements of FID, precision and recall of the EMA model's samples "
        "against the training images (one more at the end; the lowest FID's checkpoint is "
        "kept in RUN/best); 0: never",
        0,
    )
    eval_samples: int = _doc(
        "samples per measurement: the same seeds every time, classes in turn (at least 4; "
        "FIDs of fewer than 2048 are biased upwards: compare them within a run)",
        500,
    )
    eval_sampler: str = _doc(
        "sampler of the measurements: 'dpm++2m', 'ddim' (eta 0) or 'ddpm'", "dpm++2m"
    )
    eval_steps: int = _doc(
        "denoising steps of the measurements' sampler (quadratic spacing for dpm++2m, even "
        "for the others)",
        20,
    )
    eval_cfg: float = _doc(
        "classifier-free guidance weight w of the measurements' samples (needs a model with "
        "a null class); 0: plain conditional sampling",
        0.0,
    )
    eval_reference: int = _doc(
        "training images the reference statistics are computed from, evenly spread over "
        "the set (all of them when it holds fewer); computed once and cached",
        10000,
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        object.__setattr__(self, "ema_rates", tuple(float(r) for r in self.ema_rates))
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            _require_int(name, getattr(self, name), minimum=1)
        for name in ("microbatch", "warmup_steps", "sample_every", "seed", "eval_every"):
            _require_int(name, getattr(self, name), minimum=0)
        for name in ("max_nonfinite", "sample_columns", "sample_steps", "eval_steps"):
            _require_int(name, getattr(self, name), minimum=1)
        for name in ("eval_samples", "eval_reference"):
            _require_int(name, getattr(self, name), minimum=MIN_EVAL_IMAGES)
        _require_number("lr", self.lr, low=0.0, low_open=True)
        _require_number("weight_decay", self.weight_decay, low=0.0)
        _require_number("min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0)
        _require_number("grad_clip", self.grad_clip, low=0.0)
        _require_number("min_snr_gamma", self.min_snr_gamma, low=0.0)
        _require_number("cfg_weight", self.cfg_weight, low=0.0)
        _require_number("eval_cfg", self.eval_cfg, low=0.0)
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if len(set(self.ema_rates)) != len(self.ema_rates) or not all(
            0.0 < r < 1.0 for r in self.ema_rates
        ):
            raise ConfigError(
                f"ema_rates must be distinct numbers strictly between 0 and 1, got {self.ema_rates}"
            )
        if self.workers is not None:
            _require_int("workers", self.workers, minimum=0)
        if self.p_uncond is not None:
            _require_number("p_uncond", self.p_uncond, low=0.0, high=1.0, high_open=True)
        if self.wandb_project is not None and not (
            isinstance(self.wandb_project, str) and self.wandb_project.strip()
        ):
            raise ConfigError(
                f"train.wandb_project must be a project name or null, got {self.wandb_project!r}"
            )
        for name, allowed in (
            ("precision", PRECISIONS),
            ("compile", COMPILE_SETTINGS),
            ("lr_decay", LR_DECAYS),
            ("timestep_sampler", TIMESTEP_SAMPLERS),
            ("sample_sampler", SAMPLERS),
            ("tensorboard", TENSORBOARD),
            ("eval_sampler", SAMPLERS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"train.{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}"
                )

    @property
    def data_workers(self) -> int:
        """The worker processes to use: ``workers``, or the default for this machine."""
        return default_workers() if self.workers is None else self.workers

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["adam_betas"] = list(self.adam_betas)
        data["ema_rates"] = list(self.ema_rates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**data)


def field_help() -> dict[str, str]:
    """One line of help per :class:`TrainConfig` field, with its default."""
    return {f.name: f"{f.metadata['help']} (default {f.default!r})" for f in fields(TrainConfig)}


def _require_int(name: str, value: Any, minimum: int) -> None:
    if not is_int_at_least(value, minimum):
        raise ConfigError(f"train.{name} must be an integer >= {minimum}, got {value!r}")


def _require_number(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(
            f"train.{name} must be a number in {left}{low}, {high}{right}, got {value!r}"
        )
