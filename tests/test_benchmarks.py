"""The benchmarks' shared helpers, the U-Net benchmark end to end (slow) and the time-to-FID
benchmark in a tiny mode."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import benchlib  # noqa: E402
import diffuse.nn.layers as layers  # noqa: E402
from diffuse.checkpoint import save_checkpoint  # noqa: E402
from helpers.run_checks import same_tensors, weights  # noqa: E402
from helpers.sample_models import DIFFUSION, base_unet  # noqa: E402
from helpers.stand_in_network import replace_inception  # noqa: E402


def run_benchmark(script: str, *args: str, timeout: int = 300) -> str:
    """``python benchmarks/<script> args`` in a fresh process: its stdout, after it succeeded."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_machine_is_described_with_its_bf16_instructions():
    text = benchlib.describe_machine()
    # conftest makes the CPU read as this one, without bf16 instructions
    assert text.startswith("CPU: CPU of the test suite (bf16 instructions: none, bf16 is emulated)")
    assert "threads" in text


def test_rounds_rotate_so_each_implementation_takes_each_place():
    names = ["ours", "diffusers", "guided-diffusion"]
    orders = [benchlib.rotated(names, r) for r in range(3)]
    assert orders[1] == ["diffusers", "guided-diffusion", "ours"]
    for place in range(3):
        assert sorted(order[place] for order in orders) == sorted(names)


def test_a_fresh_process_answers_its_last_json_line_or_fails_with_its_error(tmp_path):
    script = tmp_path / "measure.py"
    script.write_text(
        "import sys\nfrom benchlib import emit, peak_rss_mib\n"
        "if sys.argv[1] == 'fail': raise SystemExit('no such peer: ' + sys.argv[2])\n"
        "print('chatter')\nemit({'peer': sys.argv[2], 'rss': peak_rss_mib()})\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(BENCHMARKS), *sys.path])}
    answer = benchlib.run_fresh(script, ["ok", "diffusers"], env=env)
    assert answer["peer"] == "diffusers" and answer["rss"] > 1  # MiB
    with pytest.raises(RuntimeError, match="no such peer: x"):
        benchlib.run_fresh(script, ["fail", "x"], env=env)


def test_bench_unet_refuses_an_unknown_mode_before_measuring():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_unet.py"), "--modes", "forward,train"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unknown modes ['train']; known: forward, training" in done.stderr
    assert "CPU:" not in done.stdout  # stopped before describing the machine or measuring


def test_bench_unet_measures_the_old_one_process_way_on_the_cpu_only():
    argv = [str(BENCHMARKS / "bench_unet.py"), "--one-process", "--device", "cuda"]
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--one-process measures on the CPU only" in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs diffusers")
def test_bench_unet_measures_ours_and_diffusers_in_fresh_processes():
    out = run_benchmark(
        "bench_unet.py", "--batch-size", "1", "--rounds", "1", "--warmup", "0", "--iterations",
        "1", "--peers", "diffusers", "--networks", "bench", "--precisions", "fp32,bf16",
        "--modes", "forward,training", timeout=1200,
    )  # fmt: skip
    assert out.startswith("CPU: ") and "bf16 instructions" in out
    assert out.count("ours / fastest peer (diffusers)") == 4  # both modes and precisions
    # the other bf16 layout precision=auto times, in bf16 only
    assert out.count("ours-nchw / fastest peer (diffusers)") == 2
    assert "7.66M" in out  # both networks: the same architecture
    ceilings = re.findall(r"ceiling: the same FLOP at the (fp32|bf16) matmul peak would be", out)
    assert sorted(ceilings) == ["bf16", "bf16", "fp32", "fp32"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs diffusers")
def test_bench_unet_trains_the_fashion_network_against_diffusers_natively_built():
    out = run_benchmark(
        "bench_unet.py", "--networks", "fashion", "--batch-size", "1", "--rounds", "1",
        "--warmup", "0", "--iterations", "1", "--peers", "diffusers", "--precisions", "fp32",
        "--modes", "training", timeout=1200,
    )  # fmt: skip
    assert "fashion network, training fp32" in out and "bench network" not in out
    assert re.search(r"round 1: ours fashion training fp32: [\d.]+ images/s\n", out)
    assert out.count("ours / fastest peer (diffusers)") == 1
    assert out.count("3.87M") == 2  # ours and diffusers: the preset's 3,870,625 parameters


@pytest.mark.parametrize(
    ("network", "params_m", "gflop"),
    # issue 3's network; the preset's: 3.59 and 0.87 GFLOP with upsampling before convolving
    [("bench", 7.66, 3.38), ("fashion", 3.87, 0.803)],
)
def test_a_measuring_process_answers_one_json_line(network, params_m, gflop):
    out = run_benchmark("bench_unet.py", "describe", "--names", "ours", "--network", network)
    described = json.loads(out.strip().splitlines()[-1])
    assert abs(described["params_m"] - params_m) < 0.01
    assert abs(described["gflop"] - gflop) < 0.01


def in_this_process(module):
    """A ``run_fresh`` for ``module`` that runs its measuring entry point in this process
    (seconds instead of a torch import per measurement) and answers its JSON line."""

    def run(script, args, env=None):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            module.main_generate(list(args))
        return json.loads(printed.getvalue().strip().splitlines()[-1])

    return run


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs diffusers")
@pytest.mark.parametrize("fresh", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_time_to_fid_measures_every_variant_beside_the_peer(tmp_path, monkeypatch, capsys, fresh):
    """The benchmark end to end in a tiny mode (a small random network, 4 samples, the
    stand-in feature network), its measurements in this process or, as it runs them, in
    fresh ones (slow: a torch import each): every variant, FIDs and ratios printed."""
    import bench_time_to_fid

    replace_inception(monkeypatch, bench_time_to_fid)
    threads = ["--threads", "1"]  # a fresh process would spin idle OpenMP threads here
    if not fresh:
        monkeypatch.setattr(bench_time_to_fid, "run_fresh", in_this_process(bench_time_to_fid))
        threads = []  # in this process: keep the test session's threads
    checkpoint = save_checkpoint(
        tmp_path / "model", base_unet(), diffusion=DIFFUSION, metadata={"dataset": "digits"}
    )
    argv = ["--checkpoint", str(checkpoint), "--n", "4", "--batch-size", "3", "--steps", "3,2"]
    assert bench_time_to_fid.main([*argv, "--bootstrap", "2", "--ref-n", "40", *threads]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "FID against 40 images of digits train" in out
    names = [
        "diffusers DDIM-50", "ours DDIM-50 fp32", "ours default (dpm++2m quad20, auto)",
        "ours dpm++2m quad2", "ours dpm++2m quad3",
    ]  # fmt: skip
    table = out[out.index("\nvariant") :]
    rows = [line for line in table.splitlines() if line.startswith("ours") or "DDIM-50 " in line]
    assert [row[:38].strip() for row in rows[: len(names)]] == names  # the sweep sorted
    for row in rows[: len(names)]:
        fields = row[38:].split()
        assert fields[0] in ("fp32", "bf16") and float(fields[1]) > 0 and fields[2].endswith("x")
    # the same sampler on the same network from the same x_T: the same 8-bit images, up to
    # a level where float rounding in the two stacks' kernels lands across a boundary
    same = re.search(r"max \|ours DDIM-50 fp32 - diffusers DDIM-50\| = (\d+)", out)
    assert same is not None and int(same.group(1)) <= 1
    assert "fastest at the target FID: " in out and "(issue 12's goal: 2x)" in out


def test_time_to_fid_skips_a_checkpoint_that_does_not_exist(tmp_path, capsys):
    import bench_time_to_fid

    assert bench_time_to_fid.main(["--checkpoint", str(tmp_path / "fashion")]) == 0
    assert f"skipping: {tmp_path / 'fashion'} does not exist" in capsys.readouterr().out


def test_bench_folder_loading_times_workers_against_none():
    out = run_benchmark(
        "bench_folder_loading.py", "--images", "24", "--size", "8", "--batch-size", "4",
        "--steps", "2", "--rounds", "1", "--workers", "1",
    )  # fmt: skip
    assert "wrote 24 8x8 RGB PNGs" in out and "survey (list + headers) of 24 images" in out
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    for measure in ("into memory", "on demand, one epoch", "training, on demand"):
        line = lines[measure]
        assert line.startswith(f"{measure}: 0 workers ") and line.endswith("x with 1 workers)")


def test_bench_dropout_times_ours_against_torchs_alone_and_in_a_training_step():
    out = run_benchmark("bench_dropout.py", "--batch-size", "2", "--rounds", "1")
    lines = out.splitlines()
    assert lines[0].startswith("CPU: ") and lines[2].startswith("dropout p=0.1")
    assert all("torch / ours x" in line for line in lines[3:6])
    assert lines[6].startswith("fashion training step, batch 2 (dropout 0.1): torch ")


def test_the_reproduction_costs_are_measured_per_preset():
    out = run_benchmark(
        "reproduce_costs.py", "--presets", "tiny", "--batch-size", "2", "--repeats", "1"
    )
    lines = out.splitlines()
    assert lines[0].startswith("CPU: ") and "1 threads" in lines[1]
    assert lines[2].startswith("tiny (diffusion): training ") and "ms/image" in lines[2]
    assert lines[3] == "UNITS = {" and lines[5] == "}"
    assert lines[4].startswith('    ("tiny", "diffusion"): Unit(')  # the line for costs.UNITS


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs diffusers")
@pytest.mark.parametrize("network", ["bench", "fashion"])
def test_diffusers_builds_each_network_natively_with_our_architecture(network, monkeypatch):
    bench_unet = pytest.importorskip("bench_unet")
    ours = bench_unet.describe("ours", network)
    peer = bench_unet.describe("diffusers", network)
    assert peer["params_m"] == ours["params_m"]  # parameter for parameter
    # the same operations once ours upsamples before convolving, as the papers write it
    monkeypatch.setattr(layers, "upsample2x_conv", lambda x, conv: conv(layers.upsample2x(x)))
    plain = bench_unet.describe("ours", network)
    assert abs(peer["gflop"] - plain["gflop"]) < 1e-3 * plain["gflop"]
    assert ours["gflop"] < 0.95 * plain["gflop"]  # 16 multiply-adds of every 36 upsampling ones


def test_the_fashion_network_is_the_presets():
    bench_unet = pytest.importorskip("bench_unet")
    from diffuse import presets

    config = bench_unet.NETWORKS["fashion"]
    assert config == presets.get("fashion").model_config
    # class labels go in by each library's own keyword
    x, t, labels = bench_unet.inputs(bench_unet.IMPLEMENTATIONS["diffusers"], config, 2, "training")
    assert x.shape == (2, 1, 28, 28) and t.shape == (2,)
    assert set(labels) == {"class_labels"} and labels["class_labels"].max() < 10
    assert bench_unet.IMPLEMENTATIONS["denoising-diffusion-pytorch"].unsupported(config)


@pytest.mark.slow
def test_quality_per_minute_trains_in_pieces_scores_every_mark_and_resumes(tmp_path):
    """The headline measurement end to end on the tiny preset: training stopped by SIGTERM
    at each mark and resumed, class-balanced samples scored at every mark and guidance
    weight beside the real-image floor; run again, everything is reused."""
    out, results = tmp_path / "run", tmp_path / "results"
    argv = [
        sys.executable, str(BENCHMARKS / "quality_per_minute.py"), "--preset", "tiny",
        "--data", "digits", "--marks", "0.3,0.6", "--set", "train.steps=3000",
        "--set", "train.compile=off", "--n", "20", "--ref-n", "100", "--cfg", "0,1",
        "--out", str(out), "--results", str(results),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((results / "results.json").read_text())
    assert [(row["minutes"], row["cfg"]) for row in record["rows"]] == [
        (0.3, 0.0), (0.3, 1.0), (0.6, 0.0), (0.6, 1.0),
    ]  # fmt: skip
    first, second = record["rows"][0]["step"], record["rows"][2]["step"]
    assert 0 < first < second < 3000  # stopped at each mark, the second piece resumed
    assert all(row["fid"] > record["floor"]["fid"] for row in record["rows"])
    assert (results / "fid_vs_minutes.png").stat().st_size > 0
    shown = sorted(path.name for path in results.glob("samples-*.png"))
    assert shown == ["samples-w0.png", "samples-w1.png"]  # the last mark's grids
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((results / "results.json").read_text())["rows"] == record["rows"]
    assert "interrupted by SIGTERM" not in again.stderr  # nothing trained again
    # a mark whose checkpoint is gone is trained again to its step: the same weights
    pruned = out / f"run/checkpoints/step-{first:08d}"
    shutil.move(pruned, tmp_path / "pruned")
    shutil.rmtree(out / "scores-0.3min-w0")
    rebuilt = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert f"training {out / 'rebuilt-0.3min'} again to step {first}" in rebuilt.stdout
    for name in ("model.safetensors", "ema_0.99.safetensors"):
        rebuilt_weights = weights(out / f"rebuilt-0.3min/checkpoints/step-{first:08d}", name)
        assert same_tensors(weights(tmp_path / "pruned", name), rebuilt_weights), name
    assert json.loads((results / "results.json").read_text())["rows"] == record["rows"]
    # the same run scored again with guidance on a noise-level interval: kept apart
    interval = tmp_path / "interval"
    argv += ["--cfg", "1", "--cfg-interval", "0.28", "5.42", "--results", str(interval)]
    rescored = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    assert "interrupted by SIGTERM" not in rescored.stderr
    scored = out / "scores-0.6min-w1-interval0.28-5.42"
    info = json.loads((scored / "samples/info.json").read_text())
    assert info["cfg"] == 1 and info["cfg_interval"] == [0.28, 5.42]
    again = json.loads((interval / "results.json").read_text())
    assert again["cfg_interval"] == [0.28, 5.42] and len(again["rows"]) == 2
    assert json.loads((results / "results.json").read_text())["rows"] == record["rows"]


def test_quality_per_minute_scores_the_headline_then_the_unguided_curve():
    import quality_per_minute

    marks = [{"minutes": m} for m in (5, 10, 20, 30)]
    order = [(m["minutes"], w) for m, w in quality_per_minute.scoring_order(marks, [0, 1])]
    assert order == [(30, 0), (30, 1), (20, 0), (10, 0), (5, 0), (20, 1), (10, 1), (5, 1)]


def test_quality_per_minute_passes_each_recipe_change_once_and_rejects_a_bare_key(capsys):
    import quality_per_minute

    changes = [quality_per_minute.setting(text) for text in ("train.steps=40", "train.lr=1e-3")]
    args = argparse.Namespace(warmup=7, set=changes)
    assert args.set == [("train.steps", "40"), ("train.lr", "1e-3")]
    options = quality_per_minute.settings(args)
    # the planned keys (steps, batch size) are added by the caller, once
    assert options == ["--set", "train.warmup_steps=7", "--set", "train.lr=1e-3"]
    with pytest.raises(SystemExit):
        quality_per_minute.main(["--set", "train.lr"])
    assert "expected KEY=VALUE, got 'train.lr'" in capsys.readouterr().err


def test_bench_attention_times_both_kernels_per_shape_and_in_each_networks_steps():
    out = run_benchmark("bench_attention.py", "--batch-size", "2", "--rounds", "1", timeout=600)
    lines = out.splitlines()
    assert lines[0].startswith("CPU: ")
    shapes = [line for line in lines if line.endswith("batch 2 (ms)")]
    assert shapes[0].startswith("bench: 256 tokens, 2 heads of 64")
    assert any(line.startswith("fashion: 196 tokens, 2 heads of 32") for line in shapes)
    assert sum("fused / explicit x" in line for line in lines) == 4 * len(shapes)
    assert sum("relative RMS error" in line for line in lines) == len(shapes)
    steps = [line for line in lines if " step, batch 2: fused " in line]
    assert [line.split(" step")[0] for line in steps] == [
        "bench bf16 forward", "bench bf16 training", "fashion bf16 forward",
        "fashion bf16 training",
    ]  # fmt: skip


def test_bench_layers_times_both_forms_per_shape_and_in_each_networks_steps():
    out = run_benchmark("bench_layers.py", "--batch-size", "2", "--rounds", "1", timeout=600)
    lines = out.splitlines()
    assert lines[0].startswith("CPU: ")
    shapes = [line for line in lines if line.endswith("batch 2 (ms; plain / ours)")]
    assert "upsample+conv, bench, input [128, 8, 8], batch 2 (ms; plain / ours)" in shapes
    assert (
        "GroupNorm+scale-shift, fashion, input [32, 28, 28], batch 2 (ms; plain / ours)" in shapes
    )
    timings = [line for line in lines if "error out/grad: plain " in line]
    assert len(timings) == 2 * len(shapes)  # fp32 and bf16 at each shape
    steps = [line for line in lines if " step, " in line and ": plain " in line]
    assert len(steps) == 2 * 2 * 2 * 2  # networks, precisions, modes, levers
    assert steps[0].startswith("bench fp32 (ours) forward step, upsample+conv: plain ")
