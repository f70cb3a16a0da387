"""--device (diffuse/devices.py): one rule for every command, a one-line error for a device
the machine lacks or torch does not know, before anything is read or written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffuse.cli import main
from diffuse.data import load_dataset
from diffuse.devices import available_devices, resolve_device
from diffuse.errors import ConfigError


@pytest.fixture
def cpu_only(monkeypatch):
    """This torch as a CPU-only build sees it, whatever the machine the tests run on."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_device_names_resolve_or_fail_with_what_the_machine_has(cpu_only, monkeypatch):
    assert resolve_device(None) == torch.device("cpu") == resolve_device("cpu")
    assert available_devices()[0] == "cpu"
    for name, message in [
        ("gpu", r"unknown device 'gpu': give cpu, cuda, cuda:N or mps \(this machine has: cpu"),
        ("cuda", "device 'cuda' is not available: this torch sees no cuda device"),
        ("mps", "device 'mps' is not available"),
        ("meta", "diffuse does not run on 'meta' devices"),
        ("", "unknown device ''"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with 2 GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(None) == torch.device("cuda")
    with pytest.raises(ConfigError, match=r"no cuda device 2; this machine has: cpu, cuda:0, cu"):
        resolve_device("cuda:2")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    path = tmp_path_factory.mktemp("samples") / "samples.npz"
    np.savez(path, arr_0=load_dataset("digits", split="train").uint8(range(3)))
    return str(path)


SWEEP = ["sweep", "{run}", "--ref", "digits", "--param", "steps", "--values", "2", "--n", "2"]

# Every command that takes --device, as a user types it (OUT is the output path).
COMMANDS = [
    ["sample", "{run}", "--n", "2", "--steps", "3", "--out", "{out}"],
    ["figures", "progressive", "{run}", "--steps", "3", "--out", "{out}.png"],
    ["nll", "{run}", "--data", "digits", "--n", "1", "--out", "{out}"],
    ["eval", "{samples}", "--ref", "digits", "--json", "{out}.json"],
    ["neighbors", "{samples}", "--data", "digits", "--k", "2", "--out", "{out}"],
    [*SWEEP, "--out", "{out}"],
    ["train", "--preset", "tiny", "--data", "digits", "--steps", "1", "--out", "{out}"],
    ["train-classifier", "--preset", "tiny", "--data", "digits", "--steps", "1", "--out", "{out}"],
]


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "gpu"])
@pytest.mark.parametrize("argv", COMMANDS, ids=[argv[0] for argv in COMMANDS])
def test_every_command_refuses_a_device_it_cannot_use_in_one_line(
    argv, device, cpu_only, named_run, samples, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = [a.format(run=named_run, samples=samples, out=out) for a in argv]
    assert main([*argv, "--device", device, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"diffuse {argv[0]}: error: ") and err.count("\n") == 1, err
    assert f"device '{device}'" in err and "this machine has: cpu" in err
    assert list(tmp_path.iterdir()) == []
