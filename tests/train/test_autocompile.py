"""``train.compile``: the choice step by step, and a training run that follows it (the real
compiler only in a slow test: it takes minutes on a CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from diffuse.cli import main
from diffuse.train import autocompile, resume, spec_from_preset, train
from diffuse.train import trainer as trainer_module
from diffuse.train.autocompile import COMPILED, EAGER, TRIAL_STEPS, WARMUP_STEPS, CompileChoice
from helpers.train_processes import tiny_run

LONG = 10**9  # steps remaining: a run long enough to try compiling


def run_steps(choice, seconds_eager, seconds_compiled, remaining=LONG, agree=bool):
    """Feed ``choice`` steps timed by whether they ran compiled; the messages it printed."""
    messages = []
    for _ in range(WARMUP_STEPS + 1 + TRIAL_STEPS + 2):
        seconds = seconds_compiled if choice.compiled else seconds_eager
        message = choice.step_done(seconds, remaining, agree)
        if message:
            messages.append(message)
    return messages


@pytest.mark.parametrize(("setting", "compiled"), [("on", True), ("off", False)])
def test_on_and_off_are_fixed_from_the_first_step(setting, compiled):
    choice = CompileChoice(setting, decided=EAGER if compiled else COMPILED)  # record ignored
    assert choice.compiled is compiled
    assert run_steps(choice, 1.0, 0.5) == [] and choice.compiled is compiled
    assert choice.decided == (COMPILED if compiled else EAGER)


def test_auto_stays_eager_when_the_run_cannot_repay_a_compile():
    choice = CompileChoice("auto")
    steps = int(autocompile.PAYBACK * autocompile.COMPILE_SECONDS / 2.0) - 1  # 2 s a step
    messages = run_steps(choice, 2.0, 0.1, remaining=steps)
    assert not choice.compiled and choice.decided == EAGER
    assert messages == [
        "train.compile auto -> eager (about 5.0 h of training remain, too little to repay "
        "compiling the step)"
    ]


@pytest.mark.parametrize(("compiled_seconds", "kept"), [(0.8, COMPILED), (1.2, EAGER)])
def test_auto_times_compiled_steps_on_a_long_run_and_keeps_the_faster(compiled_seconds, kept):
    choice = CompileChoice("auto")
    ran = []
    for _ in range(WARMUP_STEPS + 1 + TRIAL_STEPS):
        ran.append(choice.compiled)
        choice.step_done(compiled_seconds if choice.compiled else 1.0, LONG)
    # eager warm-up steps, then the compiling step and the timed compiled steps
    assert ran == [False] * WARMUP_STEPS + [True] * (1 + TRIAL_STEPS)
    assert choice.decided == kept and choice.compiled is (kept == COMPILED)


def test_auto_reports_the_trial_with_its_numbers():
    choice = CompileChoice("auto")
    messages, step = [], 0
    while choice.decided is None:
        first_compiled = choice.compiled and not choice.trial
        seconds = 300.0 if first_compiled else (0.5 if choice.compiled else 1.0)
        messages.append(choice.step_done(seconds, 100_000))
        step += 1
    assert [m for m in messages if m] == [
        "train.compile auto: about 27.8 h of training remain; timing compiled steps "
        "against eager ones",
        "train.compile auto -> compiled (compiling took 300 s; 1.000 s per step eager, "
        "0.500 s compiled)",
    ]


def test_auto_compiles_only_where_every_process_agrees():
    choice = CompileChoice("auto")
    run_steps(choice, 1.0, 0.5, agree=lambda yes: False)  # another process says no
    assert choice.decided == EAGER and not choice.compiled


def test_a_recorded_choice_continues_without_a_new_trial():
    for decided in (COMPILED, EAGER):
        choice = CompileChoice("auto", decided=decided)
        assert choice.compiled is (decided == COMPILED)
        assert run_steps(choice, 1.0, 2.0) == [] and choice.decided == decided


# ------------------------------------------------------------------- in a training run


def tiny(steps: int, compile_setting: str):
    overrides = {
        "train.steps": steps,
        "train.batch_size": 8,
        "train.checkpoint_every": 2,
        "train.sample_every": 0,
        "train.sample_steps": 2,
        "train.sample_columns": 2,
        "train.compile": compile_setting,
        "model.dropout": 0.1,
    }
    return spec_from_preset("tiny", "digits", overrides=overrides)


class FakeCompiler:
    """Stands in for torch.compile and for the trainer's step clock: counts the compiles;
    the 'compiled' network is the same one, and each call of it costs ``delay`` seconds
    on the fake clock, on which everything else is instant."""

    def __init__(self, monkeypatch, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.now = 0.0
        monkeypatch.setattr(autocompile, "compile_network", self.compile)
        monkeypatch.setattr(trainer_module, "clock", lambda: self.now)

    def compile(self, network):
        self.calls += 1

        def compiled(*args, **kwargs):
            self.now += self.delay
            return network(*args, **kwargs)

        return compiled


def recorded(checkpoint) -> str | None:
    return json.loads((checkpoint / "trainer.json").read_text())["compile"]


def test_a_run_with_compile_on_compiles_once_and_records_it(tmp_path, monkeypatch, capsys):
    compiler = FakeCompiler(monkeypatch)
    result = train(tiny(3, "on"), tmp_path / "run", progress=False)
    assert compiler.calls == 1 and result.step == 3
    assert capsys.readouterr().out.count("train.compile: compiling the training step") == 1
    assert recorded(result.checkpoint) == COMPILED


def test_auto_tries_compiling_keeps_eager_when_slower_and_resumes_without_a_new_trial(
    tmp_path, monkeypatch, capsys
):
    compiler = FakeCompiler(monkeypatch, delay=0.5)  # compiled steps slower: not kept
    monkeypatch.setattr(autocompile, "COMPILE_SECONDS", 0.0)  # any run repays it
    steps = WARMUP_STEPS + 1 + TRIAL_STEPS + 1
    result = train(tiny(steps, "auto"), tmp_path / "run", progress=False)
    out = capsys.readouterr().out
    assert "timing compiled steps against eager ones" in out
    assert "train.compile: compiling the training step" in out  # before the stall
    assert "train.compile auto -> eager (compiling took 0 s; 0.000 s per step eager, 0.500 s" in out
    assert compiler.calls == 1 and recorded(result.checkpoint) == EAGER
    resumed = resume(tmp_path / "run", changes={"train.steps": steps + 2}, progress=False)
    assert resumed.step == steps + 2 and compiler.calls == 1  # the recorded choice holds
    assert "train.compile" not in capsys.readouterr().out
    assert recorded(resumed.checkpoint) == EAGER


def test_a_resumed_run_follows_a_recorded_compiled_choice(tmp_path, monkeypatch):
    compiler = FakeCompiler(monkeypatch)
    train(tiny(2, "on"), tmp_path / "run", progress=False)
    resumed = resume(
        tmp_path / "run", changes={"train.steps": 4, "train.compile": "auto"}, progress=False
    )
    assert compiler.calls == 2  # once per session, from the resumed session's first step
    assert recorded(resumed.checkpoint) == COMPILED


def test_a_bad_compile_setting_is_named_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_run(out, "--steps", "1", "--set", "train.compile=sometimes")) == 2
    error = capsys.readouterr().err
    assert "train.compile 'sometimes' is not one of auto, on, off" in error
    assert len(error.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_compiled_training_follows_eager_training(tmp_path):
    """The real compiler (minutes on a CPU): the same losses as eager steps to float32
    rounding, dropout included (compiled random operations draw as eager ones)."""
    runs = {s: train(tiny(3, s), tmp_path / s, progress=False) for s in ("off", "on")}
    eager, compiled = (load_file(runs[s].checkpoint / "model.safetensors") for s in ("off", "on"))
    for key in eager:  # three AdamW steps from the same start: rounding only
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
