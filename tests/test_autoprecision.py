"""precision "auto": fp32 without bf16 instructions, else the fastest of fp32, bf16 and bf16
in NCHW as timed once and cached; the trainer runs, prints and records the decision, and
trains with the weight layout it chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffuse import autoprecision, hardware
from diffuse.checkpoint import load_checkpoint
from diffuse.cli import main
from diffuse.errors import ConfigError
from diffuse.nn import UNet
from diffuse.train import TrainConfig
from helpers.cpus import EPYC, fake_cpu, timings_favouring

NETWORK = {"kind": "unet", "model_channels": 32}


NAMES = {(c.precision, c.torch_format): c.name for c in autoprecision.CANDIDATES}


class FakeTimer:
    """A clock that advances by ``costs[candidate]`` whenever the workload runs in that
    candidate's precision and weight layout (bf16 in NCHW costs as bf16 unless
    given)."""

    def __init__(self, monkeypatch, costs: dict[str, float]) -> None:
        self.costs, self.now, self.calls, self.built = costs, 0.0, [], 0
        monkeypatch.setattr(autoprecision, "clock", lambda: self.now)

    def make_workload(self):
        self.built += 1

        def workload(precision: str, memory_format: torch.memory_format) -> None:
            name = NAMES[precision, memory_format]
            self.calls.append(name)
            self.now += self.costs.get(name, self.costs[precision])

        return workload


def decide(timer: FakeTimer, network=NETWORK, batch: int = 8) -> autoprecision.Decision:
    return autoprecision.decide(
        "cpu", network=network, batch=batch, make_workload=timer.make_workload
    )


def test_without_bf16_instructions_auto_is_fp32_and_times_nothing(tmp_path, monkeypatch):
    fake_cpu(tmp_path, monkeypatch, "avx2 avx512f avx512bw")
    timer = FakeTimer(monkeypatch, {"fp32": 2.0, "bf16": 1.0})
    decision = decide(timer)
    assert decision.precision == "fp32" and timer.built == 0
    assert decision.message() == f"precision auto -> fp32 (no bf16 instructions on {EPYC})"
    assert not autoprecision.cache_path().exists()


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_with_bf16_instructions_the_faster_wins_and_is_timed_once(tmp_path, monkeypatch, flag):
    fake_cpu(tmp_path, monkeypatch, f"avx512f {flag}")
    timer = FakeTimer(monkeypatch, {"fp32": 0.2, "bf16": 0.1})
    first = decide(timer)
    assert first.precision == "bf16" and timer.built == 1
    # a warm-up and 3 rounds each
    assert sorted(timer.calls) == ["bf16"] * 4 + ["bf16-nchw"] * 4 + ["fp32"] * 4
    assert "fp32 200 ms, bf16 100 ms, bf16-nchw 100 ms per step" in first.message()
    assert first.memory_format == "channels_last"  # a tie keeps the earlier candidate
    timer.costs = {"fp32": 0.1, "bf16": 0.2}  # the cache answers: nothing is timed again
    again = decide(timer)
    assert again.precision == "bf16" and timer.built == 1 and "measured earlier" in again.reason
    assert decide(timer, batch=16).precision == "fp32"  # another batch: measured anew
    entries = json.loads(autoprecision.cache_path().read_text())["entries"]
    assert sorted(e["choice"] for e in entries.values()) == ["bf16", "fp32"]


def test_a_tie_keeps_fp32(tmp_path, monkeypatch):
    fake_cpu(tmp_path, monkeypatch, "avx512_bf16")
    assert decide(FakeTimer(monkeypatch, {"fp32": 0.1, "bf16": 0.1})).precision == "fp32"


def test_bf16_in_nchw_wins_where_it_is_the_fastest(tmp_path, monkeypatch):
    fake_cpu(tmp_path, monkeypatch, "avx512_bf16")
    timer = FakeTimer(monkeypatch, {"fp32": 0.2, "bf16": 0.25, "bf16-nchw": 0.15})
    decision = decide(timer)
    assert (decision.precision, decision.memory_format) == ("bf16", "contiguous_format")
    assert decision.message().startswith("precision auto -> bf16 in NCHW (measured on")
    again = decide(timer)  # the cache keeps the memory format too
    assert again.memory_format == "contiguous_format" and timer.built == 1
    network = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    assert decision.apply(network) is network
    assert network.weight.is_contiguous() and not network.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    explicit = autoprecision.Decision("bf16", "requested", memory_format=None)
    assert explicit.apply(network).weight.is_contiguous()  # left as it was


def test_a_cpus_cache_key_is_the_one_earlier_versions_wrote(monkeypatch):
    # Pinned (the key of cache format 4 before GPUs were timed): a machine's cached
    # decisions stay valid across versions that do not mean to invalidate them.
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    cpu = autoprecision.cpu_machine(hardware.CpuInfo("AMD EPYC", ("avx512_bf16",)))
    assert autoprecision.cache_key(cpu, NETWORK, 8, "train") == "9d0e7980ba1e8c29e0d8f271"


def test_the_cache_key_changes_with_the_network_config(tmp_path, monkeypatch):
    fake_cpu(tmp_path, monkeypatch, "avx512_bf16")
    cpu = autoprecision.cpu_machine(hardware.cpu_info())
    key = autoprecision.cache_key(cpu, NETWORK, 8, "train")
    assert key == autoprecision.cache_key(cpu, dict(NETWORK), 8, "train")
    wider = {**NETWORK, "model_channels": 64}
    assert key != autoprecision.cache_key(cpu, wider, 8, "train")
    assert key != autoprecision.cache_key(cpu, NETWORK, 9, "train")
    timer = FakeTimer(monkeypatch, {"fp32": 0.2, "bf16": 0.1})
    decide(timer)
    decide(timer, network=wider)
    assert timer.built == 2


def test_a_damaged_cache_costs_a_measurement_and_is_rewritten(tmp_path, monkeypatch):
    fake_cpu(tmp_path, monkeypatch, "avx512_bf16")
    path = autoprecision.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"format": 2, "entries": {"x": ')
    timer = FakeTimer(monkeypatch, {"fp32": 0.2, "bf16": 0.1})
    assert decide(timer).precision == "bf16" and timer.built == 1
    assert len(json.loads(path.read_text())["entries"]) == 1


def fake_gpu(monkeypatch, bf16: bool, waits: list) -> None:
    """An H100 (or, without ``bf16``, a V100) as torch.cuda reports it, which says bf16 is
    supported either way (emulated on a V100); ``waits`` records each synchronisation."""
    name, capability = ("NVIDIA H100", (9, 0)) if bf16 else ("Tesla V100", (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waits.append(device))


def test_on_a_gpu_without_bf16_auto_is_fp32_without_timing(monkeypatch):
    fake_gpu(monkeypatch, bf16=False, waits=[])
    timer = FakeTimer(monkeypatch, {"fp32": 0.2, "bf16": 0.1})
    decision = autoprecision.decide(
        "cuda", network=NETWORK, batch=8, make_workload=timer.make_workload
    )
    assert decision.message() == "precision auto -> fp32 (Tesla V100 has no bf16 support)"
    assert timer.built == 0


@pytest.mark.parametrize(
    ("costs", "expected"),
    [({"fp32": 0.2, "bf16": 0.1}, "bf16"), ({"fp32": 0.1, "bf16": 0.2}, "fp32")],
)
def test_on_a_bf16_gpu_auto_is_timed_waiting_for_the_device_and_cached_per_gpu(
    costs, expected, monkeypatch
):
    waits = []
    fake_gpu(monkeypatch, bf16=True, waits=waits)
    timer = FakeTimer(monkeypatch, costs)
    decide_on_gpu = lambda: autoprecision.decide(  # noqa: E731
        "cuda:0", network=NETWORK, batch=8, make_workload=timer.make_workload
    )
    decision = decide_on_gpu()
    assert decision.precision == expected and timer.built == 1
    assert decision.reason.startswith("measured on NVIDIA H100, batch 8: fp32 ")
    assert len(waits) == len(timer.calls) and set(waits) == {torch.device("cuda:0")}
    again = decide_on_gpu()  # cached: not timed again
    assert again.precision == expected and timer.built == 1
    assert again.reason.startswith("measured earlier on NVIDIA H100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    decide_on_gpu()  # another GPU generation is another measurement
    assert timer.built == 2


def agreement(*decisions: autoprecision.Decision) -> list[autoprecision.Decision]:
    """What each process of a distributed run trains in, given what each decided alone."""
    totals = sum(autoprecision.votes(d, rank) for rank, d in enumerate(decisions))
    return [autoprecision.agreed(d, totals, len(decisions)) for d in decisions]


def test_the_processes_of_a_distributed_run_agree_on_one_precision_and_layout():
    bf16 = autoprecision.Decision("bf16", "timed")
    nchw = autoprecision.Decision("bf16", "timed", memory_format="contiguous_format")
    fp32 = autoprecision.Decision("fp32", "no bf16 instructions")
    assert agreement(nchw, nchw) == [nchw, nchw]  # unanimous: as decided
    # two bf16 layouts (close timings): process 0's, not fp32 as before
    first, second = agreement(nchw, bf16)
    assert first.memory_format == second.memory_format == "contiguous_format"
    assert first.precision == second.precision == "bf16" and "process 0's" in second.reason
    assert [d.precision for d in agreement(bf16, fp32, bf16)] == ["fp32"] * 3
    assert agreement(bf16) == [bf16]  # one process


def test_auto_is_the_default_and_fp16_bf16_fp32_stay_valid():
    assert TrainConfig().precision == "auto"
    for name in ("fp32", "bf16", "fp16"):
        assert TrainConfig(precision=name).precision == name
    with pytest.raises(ConfigError, match=r"train\.precision 'fp8' is not one of auto, fp32"):
        TrainConfig(precision="fp8")


# ----------------------------------------------------------------- in a run


def tiny_run(out: Path, *extra: str) -> list[str]:
    return [
        "train", "--preset", "tiny", "--data", "digits", "--out", str(out), "--steps", "2",
        "--batch-size", "8", "--set", "train.sample_steps=2", "--set", "train.sample_columns=2",
        "--set", "train.log_every=1", "--no-progress", *extra,
    ]  # fmt: skip


def recorded(run: Path) -> tuple[str, str, list[str]]:
    """The precision in run.json, in the checkpoint's configuration and in the metrics."""
    requested = json.loads((run / "run.json").read_text())["train"]["precision"]
    checkpoint = load_checkpoint(run).metadata["train"]["precision"]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return requested, checkpoint, [json.loads(line)["precision"] for line in lines]


def test_a_run_prints_and_records_what_auto_chose(tmp_path, monkeypatch, capsys):
    fake_cpu(tmp_path, monkeypatch, "avx2")
    assert main(tiny_run(tmp_path / "run")) == 0
    assert f"precision auto -> fp32 (no bf16 instructions on {EPYC})" in capsys.readouterr().out
    assert recorded(tmp_path / "run") == ("auto", "fp32", ["fp32", "fp32"])


def test_auto_choosing_bf16_trains_exactly_as_an_explicit_bf16_run(tmp_path, monkeypatch, capsys):
    """The timing runs the real network on a copy with its own random streams: the run
    afterwards is the one --precision bf16 gives."""
    fake_cpu(tmp_path, monkeypatch, "avx512_bf16")
    timed = []
    monkeypatch.setattr(autoprecision, "time_precisions", timings_favouring("bf16", timed))
    assert main(tiny_run(tmp_path / "auto")) == 0
    assert "precision auto -> bf16 (measured on" in capsys.readouterr().out
    assert len(timed) == 1 and recorded(tmp_path / "auto")[1:] == ("bf16", ["bf16", "bf16"])
    assert main([*tiny_run(tmp_path / "again"), "--steps", "1"]) == 0  # the same key
    assert "precision auto -> bf16 (measured earlier" in capsys.readouterr().out
    assert len(timed) == 1
    assert main(tiny_run(tmp_path / "bf16", "--precision", "bf16")) == 0
    assert "precision auto" not in capsys.readouterr().out  # said only for "auto"
    assert recorded(tmp_path / "bf16") == ("bf16", "bf16", ["bf16", "bf16"])
    for name in ("model.safetensors", "ema_0.99.safetensors"):
        auto = load_file(str(tmp_path / "auto/checkpoints/step-00000002" / name))
        explicit = load_file(str(tmp_path / "bf16/checkpoints/step-00000002" / name))
        for key in auto:
            # the same kernels on the same inputs in one process: equal up to nothing,
            # but a tolerance keeps the test independent of kernel determinism
            torch.testing.assert_close(auto[key], explicit[key], rtol=1e-6, atol=1e-7)


def test_auto_choosing_bf16_in_nchw_trains_in_that_memory_format(tmp_path, monkeypatch, capsys):
    """The network's weights are NCHW (contiguous), not the channels_last that fp32 and
    explicit bf16 use (the network then computes in NCHW: tests/nn/test_unet.py)."""
    fake_cpu(tmp_path, monkeypatch, "avx512_bf16")
    monkeypatch.setattr(autoprecision, "time_precisions", timings_favouring("bf16-nchw"))
    layouts = []

    def record(module, args):
        if isinstance(module, UNet) and module.training and torch.is_grad_enabled():
            convolution = max((p for p in module.parameters() if p.dim() == 4), key=torch.numel)
            layouts.append(convolution.is_contiguous())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        assert main(tiny_run(tmp_path / "run")) == 0
    finally:
        handle.remove()
    assert "precision auto -> bf16 in NCHW (measured on" in capsys.readouterr().out
    assert recorded(tmp_path / "run")[1:] == ("bf16", ["bf16", "bf16"])
    # the timing's three candidates, then the two training steps: all but the first two
    # (fp32 and bf16 in channels_last) in NCHW
    assert layouts == [False, False, True, True, True]
