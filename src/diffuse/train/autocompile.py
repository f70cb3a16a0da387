"""``train.compile``: whether the training step runs through ``torch.compile``.

- "off": eager PyTorch.
- "on": the network's forward and backward pass compiled (TorchInductor) from the first
  step, which compiles (minutes on a CPU, once per network, batch and machine: the
  compiled kernels are cached on disk).
- "auto" (the default): compiled only where it is measured faster and there is time to
  repay the compile. After :data:`WARMUP_STEPS` eager steps (the first is not timed) the
  rest of the planned run, at the eager speed, must last :data:`PAYBACK` times
  :data:`COMPILE_SECONDS`; then the step is compiled, :data:`TRIAL_STEPS` compiled steps
  are timed after the compiling one, and the run keeps whichever ran faster. The trial
  costs at most about 1/PAYBACK of such a run where compiling does not pay.

Measured on this project's 2-core AMD EPYC (torch 2.13, ``fashion`` network, batch 16,
training steps alternated in one process): compiling took 267-1078 s cold on the loaded
machine (13 s with its kernels cached), and the compiled step used 9 % *more* CPU time
than eager with the fused GroupNorm of :mod:`diffuse.nn.group_norm` (+3 to +14 % in wall
time before it): so "auto" tries it only on long runs, and keeps it where it pays.

The choice, once made, is saved with each checkpoint: a resumed run continues as it
ran (compiled or eager steps round differently, so this keeps resuming exact). Compiled
random operations draw as eager ones do (``fallback_random``), so dropout masks do not
change with the choice.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

WARMUP_STEPS = 3
TRIAL_STEPS = 3
PAYBACK = 20.0
COMPILE_SECONDS = 900.0
COMPILED, EAGER = "compiled", "eager"


def compile_network(network: torch.nn.Module) -> torch.nn.Module:
    """``network`` compiled with TorchInductor, its random operations drawing as in eager."""
    return torch.compile(network, options={"fallback_random": True})


class CompileChoice:
    """Which way each training step runs, for one ``train.compile`` setting.

    setting: "auto", "on" or "off" (``TrainConfig.compile``, checked there).
    decided: the choice a checkpoint of this run recorded (COMPILED or EAGER), or None.

    The trainer asks :attr:`compiled` before each step and reports each step's duration
    to :meth:`step_done`; :attr:`decided` is what a checkpoint records.
    """

    def __init__(self, setting: str, decided: str | None = None) -> None:
        fixed = {"on": COMPILED, "off": EAGER}.get(setting)
        self.decided = fixed or (decided if decided in (COMPILED, EAGER) else None)
        self.trying = False
        self.eager: list[float] = []
        self.trial: list[float] = []

    @property
    def compiled(self) -> bool:
        """Whether the next step runs compiled."""
        return self.trying or self.decided == COMPILED

    def step_done(
        self, seconds: float, remaining: int, agree: Callable[[bool], bool] = bool
    ) -> str | None:
        """Count a step that took ``seconds``, with ``remaining`` steps planned after it;
        returns a line for the user when the choice moves on. ``agree`` turns this
        process's yes into the answer of all processes (a distributed run decides as one).
        """
        if self.decided is not None:
            return None
        if not self.trying:
            self.eager.append(seconds)
            if len(self.eager) < WARMUP_STEPS:
                return None
            eager = statistics.median(self.eager[1:])
            hours = remaining * eager / 3600
            if not agree(remaining * eager >= PAYBACK * COMPILE_SECONDS):
                self.decided = EAGER
                return (
                    f"train.compile auto -> eager (about {hours:.1f} h of training remain, "
                    f"too little to repay compiling the step)"
                )
            self.trying = True
            return (
                f"train.compile auto: about {hours:.1f} h of training remain; timing "
                "compiled steps against eager ones"
            )
        self.trial.append(seconds)
        if len(self.trial) < 1 + TRIAL_STEPS:  # the first compiled step compiles
            return None
        eager, compiled = statistics.median(self.eager[1:]), statistics.median(self.trial[1:])
        self.trying = False
        self.decided = COMPILED if agree(compiled < eager) else EAGER
        return (
            f"train.compile auto -> {self.decided} (compiling took {self.trial[0]:.0f} s; "
            f"{eager:.3f} s per step eager, {compiled:.3f} s compiled)"
        )
