"""Training metrics in TensorBoard and Weights & Biases, as a user turns them on.

Neither package is installed here: stand-ins injected as the modules record what the
trainer calls (torch.utils.tensorboard's SummaryWriter, wandb's init / log / finish).
"""

from __future__ import annotations

import json
import sys
import types

import pytest

from diffuse.cli import main
from diffuse.errors import ConfigError
from diffuse.train.tracking import open_trackers
from diffuse.train.train_config import TrainConfig


class Recorder:
    """Records calls as (name, args, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def method(self, name: str):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


@pytest.fixture
def fake_wandb(monkeypatch) -> Recorder:
    record = Recorder()
    run = types.SimpleNamespace(log=record.method("log"), finish=record.method("finish"))

    def init(**kwargs):
        record.calls.append(("init", (), kwargs))
        return run

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    return record


@pytest.fixture
def fake_tensorboard(monkeypatch) -> Recorder:
    record = Recorder()

    class SummaryWriter:
        def __init__(self, folder):
            record.calls.append(("open", (folder,), {}))
            self.add_scalar, self.close = record.method("add_scalar"), record.method("close")

    module = types.SimpleNamespace(SummaryWriter=SummaryWriter)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    return record


def train_argv(out, *settings: str) -> list[str]:
    argv = ["train", "--preset", "tiny", "--data", "digits", "--out", str(out), "--steps", "4"]
    argv += ["--batch-size", "8", "--set", "train.log_every=2", "--set", "train.sample_steps=2"]
    argv += ["--set", "train.sample_columns=1", "--no-progress"]
    for setting in settings:
        argv += ["--set", setting]
    return argv


def test_metrics_go_to_wandb_and_tensorboard_as_to_metrics_jsonl(
    tmp_path, fake_wandb, fake_tensorboard
):
    run = tmp_path / "run"
    argv = train_argv(run, "train.wandb_project=digits-demo", "train.tensorboard=on")
    assert main(argv) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]

    (init, *logs, finish) = fake_wandb.calls
    assert init[0] == "init" and finish[0] == "finish"
    assert init[2]["project"] == "digits-demo" and init[2]["name"] == "run"
    assert init[2]["dir"] == str(run / "wandb") and (run / "wandb").is_dir()
    assert init[2]["config"] == json.loads((run / "run.json").read_text())
    for (name, (values,), options), line in zip(logs, lines, strict=True):
        assert name == "log" and options == {"step": line["step"]}
        assert values == {k: v for k, v in line.items() if k != "step" and k != "precision"}

    opened, *scalars, closed = fake_tensorboard.calls
    assert opened == ("open", (str(run / "tensorboard"),), {}) and closed[0] == "close"
    assert ("add_scalar", ("loss", lines[1]["loss"], 4), {}) in scalars
    assert ("add_scalar", ("lr", lines[0]["lr"], 2), {}) in scalars


def test_tensorboard_off_writes_no_events(tmp_path, fake_tensorboard):
    assert main(train_argv(tmp_path / "run", "train.tensorboard=off")) == 0
    assert fake_tensorboard.calls == [] and not (tmp_path / "run" / "tensorboard").exists()


def test_resuming_a_finished_run_starts_no_tracker(tmp_path, fake_wandb, fake_tensorboard):
    run = tmp_path / "run"
    assert main(train_argv(run, "train.wandb_project=digits-demo")) == 0
    fake_wandb.calls.clear()
    fake_tensorboard.calls.clear()
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert fake_wandb.calls == [] and fake_tensorboard.calls == []


def test_a_tracker_that_fails_to_start_closes_those_already_started(
    tmp_path, monkeypatch, fake_tensorboard
):
    def init(**kwargs):
        raise RuntimeError("wandb: not logged in")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    config = TrainConfig(tensorboard="on", wandb_project="digits-demo")
    with pytest.raises(RuntimeError, match="not logged in"):
        open_trackers(config, tmp_path, {})
    assert [call[0] for call in fake_tensorboard.calls] == ["open", "close"]


def test_a_tracker_that_is_not_installed_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, capsys, named_run
):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    run = tmp_path / "run"
    assert main(train_argv(run, "train.wandb_project=digits-demo")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pip install 'diffuse[wandb]'" in error
    assert not run.exists()
    assert main(train_argv(run, "train.tensorboard=on")) == 2
    assert "pip install 'diffuse[tensorboard]'" in capsys.readouterr().err
    # Turning W&B on when resuming an existing run: refused, the run left as it was.
    before = {path: path.read_bytes() for path in named_run.rglob("*") if path.is_file()}
    resume = ["train", "--out", str(named_run), "--resume", "--steps", "3", "--no-progress"]
    assert main([*resume, "--set", "train.wandb_project=digits-demo"]) == 2
    assert "wandb is not installed" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in named_run.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"tensorboard": "yes"}, "train.tensorboard 'yes' is not one of auto, on, off"),
        ({"wandb_project": 3}, "train.wandb_project must be a project name or null, got 3"),
        ({"wandb_project": " "}, "must be a project name"),
    ],
)
def test_bad_tracking_settings_are_named(setting, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**setting)
