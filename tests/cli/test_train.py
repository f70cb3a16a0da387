"""``diffuse train`` and ``diffuse train-classifier`` from the command line: a run end to
end, its messages, SIGTERM in a real process, and two processes under torchrun."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffuse.checkpoint import load_checkpoint
from diffuse.cli import build_parser, main
from helpers.train_processes import DIFFUSE, QUICK, one_thread_env, start_endless_training, tiny_run


def test_train_prints_where_the_checkpoint_and_the_grid_are(tmp_path, capsys):
    assert main(tiny_run(tmp_path / "run", "--steps", "2", "--batch-size", "8")) == 0
    out = capsys.readouterr().out
    assert "trained steps 0 -> 2" in out
    assert str(tmp_path / "run/checkpoints/step-00000002") in out
    grid = tmp_path / "run/samples/step-00000002.png"
    assert f"{grid} (one row per class, classifier-free guidance w=" in out
    assert grid.is_file() and load_checkpoint(tmp_path / "run").step == 2


def test_the_upsampler_preset_and_a_smaller_base_make_a_two_stage_pipeline(tmp_path, capsys):
    # The fashion-upsampler-14-28 preset at the digits' scale: a 4x4 base (the 8x8 digits
    # shrunk by 2, as fashion-mnist's 28x28 shrink to its 14x14 base) and a 4 -> 8 upsampler.
    base, upsampler = tmp_path / "base", tmp_path / "up"
    short = ["--steps", "2", "--batch-size", "4"]
    assert main(tiny_run(base, *short, "--set", "model.image_size=4")) == 0
    up_run = ["train", "--preset", "fashion-upsampler-14-28", "--data", "digits"]
    sizes = ["--set", "model.image_size=8", "--set", "model.low_res_size=4"]
    assert main([*up_run, "--out", str(upsampler), *sizes, *QUICK, *short]) == 0
    grid = upsampler / "samples/step-00000002.png"
    assert f"{grid} (rows: low-resolution input, sample, original, classifier-free" in (
        capsys.readouterr().out
    )
    assert load_checkpoint(upsampler).model.config.channel_mult == (1, 2, 2)
    out = tmp_path / "samples"
    argv = [
        "sample", str(base), "--upsampler", str(upsampler), "--n", "2", "--steps", "3",
        "--upsampler-steps", "3", "--classes", "4", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "2 samples (8x8x1) written" in capsys.readouterr().out
    with np.load(out / "samples.npz") as npz:
        assert npz["arr_0"].shape == (2, 8, 8, 1) and npz["arr_1"].tolist() == [4, 4]


def test_a_named_data_set_is_never_enlarged_to_the_network(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_run(out, "--steps", "1", "--set", "model.image_size=12")) == 2
    error = capsys.readouterr().err
    assert "'digits' has 8x8 images but the network expects 12x12" in error
    assert "model.image_size=8 (or a whole fraction of it, e.g. 4)" in error
    assert not out.exists()


def test_errors_are_one_line_and_leave_the_run_alone(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_run(run, "--steps", "1", "--batch-size", "4")) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(tiny_run(run, "--steps", "1")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--preset", "digits"]) == 2
    assert "differs from the run's 'tiny'" in capsys.readouterr().err
    assert main(["train-classifier", "--out", str(run), "--resume"]) == 2
    assert "diffuse train`" in capsys.readouterr().err
    assert main(tiny_run(tmp_path / "x", "--set", "train.lr")) == 2
    assert "<section>.<field>=<value>" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_min_snr_weighting_trains_and_is_refused_where_there_is_no_mse(tmp_path, capsys):
    run = tmp_path / "run"
    gamma = ["--set", "train.min_snr_gamma=5"]
    assert main(tiny_run(run, "--steps", "2", "--batch-size", "8", *gamma)) == 0
    assert json.loads((run / "run.json").read_text())["train"]["min_snr_gamma"] == 5.0
    assert load_checkpoint(run).step == 2
    capsys.readouterr()
    refused = [
        (["--set", "diffusion.loss=kl", *gamma], "the kl loss has none"),
        (["--set", "train.min_snr_gamma=-1"], "train.min_snr_gamma must be a number in [0.0"),
    ]
    classifier = ["train-classifier", "--preset", "tiny", "--data", "digits"]
    classifier += ["--out", str(tmp_path / "refused")]
    refused.append(([*classifier, *gamma], "the classifier's cross-entropy has none"))
    for extra, message in refused:
        argv = extra if extra[0] == "train-classifier" else tiny_run(tmp_path / "refused", *extra)
        assert main([*argv, "--steps", "1"]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "refused").exists()


def test_stop_at_stops_with_a_checkpoint_and_says_how_to_continue(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_run(run, "--steps", "4", "--batch-size", "4", "--stop-at", "2")) == 0
    out = capsys.readouterr().out
    assert f"stopped at step 2 of 4 (--stop-at); continue with: diffuse train --out {run}" in out
    assert load_checkpoint(run).step == 2 and not (run / "samples").exists()
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--stop-at", "5"]) == 0
    assert "stopped at step 5 of 6" in capsys.readouterr().out
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "trained steps 5 -> 6" in capsys.readouterr().out


def test_show_config_applies_every_override(tmp_path, capsys):
    argv = tiny_run(tmp_path / "r", "--lr", "0.01", "--set", "model.model_channels=32")
    assert main([*argv, "--set", "train.ema_rates=0.9,0.99", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["train"]["lr"] == 0.01 and shown["train"]["ema_rates"] == [0.9, 0.99]
    assert shown["model"]["model_channels"] == 32 and shown["preset"] == "tiny"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["train", "train-classifier"])
def test_help_explains_every_option_and_every_setting(command):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        assert action.help, action.option_strings
    text = sub.format_help()
    for name in ("train.ema_rates", "train.p_uncond", "diffusion.loss", "model.<field>"):
        assert name in text


def test_sigterm_saves_a_loadable_checkpoint_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    process, _ = start_endless_training(run)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err.decode()
    assert "interrupted by SIGTERM" in err.decode() and "--resume" in err.decode()
    loaded = load_checkpoint(run)
    assert 1 <= loaded.step < 100000
    assert f"step-{loaded.step:08d}" in out.decode()


# What torchrun gives each process: its rank, the world size and the rendezvous address;
# FID while training measures with the stand-in feature network.
WORKER = """
import os, sys
from diffuse.cli import main
from helpers.stand_in_network import install_stand_in
install_stand_in()
rank, ports, runs = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
os.environ.update(RANK=rank, LOCAL_RANK=rank, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
for port, argv in zip(ports, runs):
    os.environ["MASTER_PORT"] = port
    assert main(argv.split("|")) == 0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# lr_decay none: the first half trains the same steps whatever the run's length (tiny_run
# trains in fp32: the worker processes see the real CPU).
TWO_STEPS = ["--batch-size", "16", "--device", "cpu", "--set", "train.checkpoint_every=2"]
TWO_STEPS += ["--set", "train.lr_decay=none"]
FID_EVERY_2 = ["--set", "train.eval_every=2", "--set", "train.eval_samples=8"]
FID_EVERY_2 += ["--set", "train.eval_steps=2"]


def test_two_gloo_processes_match_one_process_and_resume(tmp_path):
    """Two CPU processes (gloo, started as torchrun starts them), each taking half of a
    global batch of 16, train 2 steps, then resume to 4: the weights equal those of one
    process trained 4 steps on the same global batches, to float round-off. Process 0
    alone measures FID, at steps 2 and 4, while the other waits; the one process measures
    nothing, so the measurements change no weight."""
    runs = [
        tiny_run(tmp_path / "two", "--steps", "2", *TWO_STEPS, *FID_EVERY_2),
        ["train", "--out", str(tmp_path / "two"), "--resume", "--steps", "4", "--no-progress"],
    ]
    ports = f"{free_port()},{free_port()}"
    command = [sys.executable, "-c", WORKER]
    workers = [
        subprocess.Popen(
            [*command, str(rank), ports, *("|".join(argv) for argv in runs)],
            env=one_thread_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    assert outputs[0][0].count("trained steps") == 2 and "trained steps" not in outputs[1][0]
    records = [json.loads(line) for line in (tmp_path / "two/metrics.jsonl").open()]
    assert [record["step"] for record in records if "fid" in record] == [2, 4]
    assert load_checkpoint(tmp_path / "two/best").step in (2, 4)
    assert main(tiny_run(tmp_path / "one", "--steps", "4", *TWO_STEPS)) == 0
    assert_same_weights(tmp_path / "two", tmp_path / "one", step=4)


def assert_same_weights(run_a: Path, run_b: Path, step: int) -> None:
    for name in ("model.safetensors", "ema_0.99.safetensors"):
        a = load_file(str(run_a / f"checkpoints/step-{step:08d}" / name))
        b = load_file(str(run_b / f"checkpoints/step-{step:08d}" / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_torchrun_launches_two_processes(tmp_path):
    """The real launcher: torchrun --nproc_per_node 2 --no-python diffuse train."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc_per_node=2", "--no-python", DIFFUSE]
    argv = tiny_run(tmp_path / "two", "--steps", "2", *TWO_STEPS)
    done = subprocess.run(
        [*torchrun, *argv], env=one_thread_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained steps") == 1  # only process 0 reports
    assert main(tiny_run(tmp_path / "one", "--steps", "2", *TWO_STEPS)) == 0
    assert_same_weights(tmp_path / "two", tmp_path / "one", step=2)
