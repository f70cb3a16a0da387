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


def test_a_measuring_process_answers_one_json_line():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_unet.py"), "describe", "--names", "ours"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    described = json.loads(done.stdout.strip().splitlines()[-1])
    # 7.66 M parameters and 3.59 GFLOP per image (issue 3's network)
    assert abs(described["params_m"] - 7.66) < 0.01 and abs(described["gflop"] - 3.59) < 0.01


def test_the_reproduction_costs_are_measured_per_preset():
    done = subprocess.run(
        [
            sys.executable, str(BENCHMARKS / "reproduce_costs.py"), "--presets", "tiny",
            "--batch-size", "2", "--repeats", "1",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CPU: ") and "1 threads" in lines[1]
    assert lines[2].startswith("tiny (diffusion): training ") and "ms/image" in lines[2]
    assert lines[3] == "UNITS = {" and lines[5] == "}"
    assert lines[4].startswith('    ("tiny", "diffusion"): Unit(')  # the line for costs.UNITS
