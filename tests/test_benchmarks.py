"""The benchmarks' shared helpers, and the U-Net benchmark end to end (slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import benchlib  # noqa: E402


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


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs diffusers")
def test_bench_unet_measures_ours_and_diffusers_in_fresh_processes():
    done = subprocess.run(
        [
            sys.executable, str(BENCHMARKS / "bench_unet.py"), "--batch-size", "1",
            "--rounds", "1", "--warmup", "0", "--iterations", "1", "--peers", "diffusers",
            "--precisions", "fp32", "--modes", "forward,training",
        ],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("CPU: ") and "bf16 instructions" in out
    assert out.count("ours / fastest peer (diffusers)") == 2  # forward and training
    assert "7.66M" in out  # both networks: the same architecture


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs diffusers")
def test_bench_unet_trains_the_fashion_network_against_diffusers_natively_built():
    done = subprocess.run(
        [
            sys.executable, str(BENCHMARKS / "bench_unet.py"), "--networks", "fashion",
            "--batch-size", "1", "--rounds", "1", "--warmup", "0", "--iterations", "1",
            "--peers", "diffusers", "--precisions", "fp32", "--modes", "training",
        ],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "fashion network, training fp32" in out and "bench network" not in out
    assert out.count("ours / fastest peer (diffusers)") == 1
    assert out.count("3.87M") == 2  # ours and diffusers: the preset's 3,870,625 parameters


@pytest.mark.parametrize(
    ("network", "params_m", "gflop"),
    [("bench", 7.66, 3.59), ("fashion", 3.87, 0.867)],  # issue 3's network; the preset's
)
def test_a_measuring_process_answers_one_json_line(network, params_m, gflop):
    done = subprocess.run(
        [
            sys.executable, str(BENCHMARKS / "bench_unet.py"), "describe", "--names", "ours",
            "--network", network,
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    described = json.loads(done.stdout.strip().splitlines()[-1])
    assert abs(described["params_m"] - params_m) < 0.01
    assert abs(described["gflop"] - gflop) < 0.01


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs diffusers")
@pytest.mark.parametrize("network", ["bench", "fashion"])
def test_diffusers_builds_each_network_natively_with_our_architecture(network):
    bench_unet = pytest.importorskip("bench_unet")
    ours = bench_unet.describe("ours", network)
    peer = bench_unet.describe("diffusers", network)
    assert peer["params_m"] == ours["params_m"]  # parameter for parameter
    assert abs(peer["gflop"] - ours["gflop"]) < 1e-3 * ours["gflop"]  # FLOP counts, same ops


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
