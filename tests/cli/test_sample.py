"""`diffuse sample` as a user runs it, on small random models saved as checkpoints."""

from __future__ import annotations

import json
import os
import re
import signal

import numpy as np
import pytest
from PIL import Image

from diffuse.checkpoint import load_checkpoint, save_checkpoint
from diffuse.cli import main
from diffuse.diffusion import DiffusionConfig
from diffuse.eval.samples import load_samples
from diffuse.sample import SamplerSettings, Stage, generate
from helpers.sample_models import DIFFUSION, base_unet, classifier, upsampler


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    model = base_unet()
    ema = {key: value + 0.01 for key, value in model.state_dict().items()}
    run = root / "run"
    save_checkpoint(run / "checkpoints" / "step-00000005", base_unet(seed=5), diffusion=DIFFUSION)
    save_checkpoint(
        run / "checkpoints" / "step-00000010", model, diffusion=DIFFUSION, ema={0.999: ema}
    )
    paths = {"run": run}
    for name, network, diffusion in [
        ("classifier", classifier(), DIFFUSION),
        ("classifier16", classifier(image_size=16), DIFFUSION),
        ("classifier_linear", classifier(), DiffusionConfig("linear", 1000)),
        ("upsampler", upsampler(), DIFFUSION),
        ("upsampler4", upsampler(low_res_size=4), DIFFUSION),
        ("no_null", base_unet(null_class=False), DIFFUSION),
        ("no_diffusion", base_unet(), None),
    ]:
        paths[name] = save_checkpoint(root / name, network, diffusion=diffusion)
    return {key: str(value) for key, value in paths.items()}


def test_samples_of_the_latest_ema_weights_as_png_grid_and_npz(checkpoints, tmp_path, capsys):
    out = tmp_path / "samples"
    argv = [
        "sample", checkpoints["run"], "--n", "5", "--batch-size", "2", "--sampler", "dpm++2m",
        "--steps", "quad4", "--classes", "1,2", "--seed", "3", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "5 samples (8x8x1) written" in capsys.readouterr().out
    with np.load(out / "samples.npz") as npz:
        images, labels = npz["arr_0"], npz["arr_1"]
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8
    assert labels.tolist() == [1, 2, 1, 2, 1]
    np.testing.assert_array_equal(load_samples(out / "samples.npz"), images)  # eval reads it
    for i in range(5):
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / "images" / f"{i:06d}.png")), images[i, :, :, 0]
        )
    assert Image.open(out / "grid.png").size[0] > 64
    info = json.loads((out / "info.json").read_text())
    assert info["num_samples"] == 5 and info["seed"] == 3 and info["sampler"] == "dpm++2m"

    # The run's latest checkpoint with its EMA weights, sample i from seed 3 + i.
    loaded = load_checkpoint(checkpoints["run"])
    assert (
        loaded.weights == "ema_0.999" and loaded.step is None
    ) or loaded.path.name == "step-00000010"
    stage = Stage(loaded.model, DIFFUSION, SamplerSettings("dpm++2m", "quad4"))
    expected = generate(stage, 5, seed=3, classes=[1, 2])
    assert np.abs(expected.images.astype(int) - images).max() <= 1
    raw = Stage(
        load_checkpoint(checkpoints["run"], weights="model").model, DIFFUSION, stage.sampler
    )
    assert np.abs(generate(raw, 5, seed=3, classes=[1, 2]).images.astype(int) - images).max() > 1


def test_guidance_and_upsampler_from_the_command_line(checkpoints, tmp_path):
    out = tmp_path / "up"
    argv = [
        "sample", checkpoints["run"], "--n", "3", "--sampler", "ddpm", "--steps", "4",
        "--cfg", "1.5", "--cfg-interval", "0.5", "20", "--classifier", checkpoints["classifier"],
        "--classifier-scale", "3", "--upsampler", checkpoints["upsampler"],
        "--upsampler-sampler", "ddim", "--upsampler-steps", "3", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    with np.load(out / "samples.npz") as npz:
        assert npz["arr_0"].shape == (3, 16, 16, 1) and npz["arr_1"].shape == (3,)


def test_the_upsamplers_weights_and_eta_are_its_own(checkpoints, tmp_path, capsys):
    def run(out, *options):
        argv = ["sample", checkpoints["run"], "--n", "2", "--steps", "2", "--seed", "1"]
        argv += ["--upsampler", checkpoints["upsampler"], "--upsampler-steps", "3"]
        return main([*argv, *options, "--out", str(tmp_path / out), "--no-progress"])

    assert run("eta0", "--upsampler-weights", "model") == 0
    assert run("eta1", "--upsampler-eta", "1") == 0
    assert info_of(tmp_path / "eta0")["upsampler"]["weights"] == "model"
    with np.load(tmp_path / "eta0/samples.npz") as a, np.load(tmp_path / "eta1/samples.npz") as b:
        assert np.abs(a["arr_0"].astype(int) - b["arr_0"]).max() > 1  # fresh noise at eta 1
    capsys.readouterr()
    assert run("ema", "--upsampler-weights", "ema_0.99") == 2
    assert "has no weights 'ema_0.99'; available: ['model']" in capsys.readouterr().err
    assert run("solver", "--upsampler-sampler", "dpm++2m", "--upsampler-eta", "1") == 2
    assert "eta is DDIM's" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eta0", "eta1"]


def test_an_existing_output_is_kept_and_overwrite_replaces_only_samples(
    checkpoints, tmp_path, capsys
):
    out = tmp_path / "samples"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    argv = [
        "sample",
        checkpoints["run"],
        "--n",
        "2",
        "--steps",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 2  # mine.txt is not diffuse's to delete
    assert "diffuse did not write there (mine.txt)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (
        out / "mine.txt"
    ).read_text() == "keep me"
    (out / "mine.txt").unlink()
    assert main(argv) == 0
    assert main([*argv, "--overwrite"]) == 0  # an earlier sample folder is replaced
    assert sorted(p.name for p in out.iterdir()) == [
        "grid.png",
        "images",
        "info.json",
        "samples.npz",
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{classifier}"], "holds a noisy classifier, not a diffusion model"),
        (["{no_diffusion}"], "without diffusion settings"),
        (["{run}", "--classes", "3,10"], r"classes \[10\] are out of range"),
        (["{run}", "--classes", "one"], "comma-separated integers"),
        (["{no_null}", "--cfg", "2"], "null class"),
        (["{run}", "--classifier", "{classifier16}"], "16x16 images but the model makes"),
        (["{run}", "--classifier", "{classifier_linear}"], "trained on the linear schedule"),
        (["{run}", "--classifier", "{run}"], "not a noisy classifier"),
        (["{run}", "--classifier-scale", "4"], "--classifier-scale needs --classifier"),
        (["{run}", "--upsampler", "{upsampler4}"], "takes 4x4 images but the base model makes 8x8"),
        (["{run}", "--upsampler", "{run}"], "not an upsampler"),
        (["{run}", "--steps", "ddim999"], "no constant stride"),
        (["{run}", "--sampler", "ddpm", "--eta", "1"], "eta is DDIM's"),
        (["{run}", "--seed", "-1"], "--seed must be >= 0"),
        (["{run}/missing"], "does not exist"),
    ],
)
def test_bad_requests_fail_before_any_output(checkpoints, tmp_path, capsys, arguments, message):
    out = tmp_path / "samples"
    argv = ["sample", *(a.format(**checkpoints) for a in arguments), "--out", str(out), "--n", "2"]
    assert main([*argv, "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert re.search(message, error), error
    assert not out.exists()


def sample_run(run, out, *options):
    argv = ["sample", str(run), "--n", "4", "--steps", "3", "--out", str(out), "--no-progress"]
    return main([*argv, *options])


def info_of(out):
    return json.loads((out / "info.json").read_text())


def test_info_names_the_checkpoint_step_and_weights_file_that_were_used(named_run, tmp_path):
    assert sample_run(named_run, tmp_path / "ema", "--classes", "1") == 0
    info = info_of(tmp_path / "ema")
    folder = named_run.resolve() / "checkpoints" / "step-00000002"
    assert info["checkpoint"] == str(folder) and info["step"] == 2
    assert (info["weights"], info["weights_file"]) == ("ema_0.99", "ema_0.99.safetensors")
    assert (folder / info["weights_file"]).is_file()
    # The record is what made the samples: loaded from it, they come out the same.
    loaded = load_checkpoint(info["checkpoint"], weights=info["weights"])
    settings = SamplerSettings(info["sampler"], info["steps"])
    stage = Stage(loaded.model, loaded.diffusion, settings)
    with np.load(tmp_path / "ema" / "samples.npz") as npz:
        images = npz["arr_0"]
    assert np.abs(generate(stage, 4, classes=[1]).images.astype(int) - images).max() <= 1

    assert sample_run(named_run, tmp_path / "raw", "--weights", "model") == 0
    raw = info_of(tmp_path / "raw")
    assert (raw["weights"], raw["weights_file"]) == ("model", "model.safetensors")
    assert raw["checkpoint"] == str(folder) and raw["upsampler"] is None


def test_classes_by_the_names_the_checkpoint_carries(named_run, tmp_path, capsys):
    # The folder's classes, sorted: eight five four nine one seven six three two zero.
    assert sample_run(named_run, tmp_path / "s", "--classes", "3,seven, Zero") == 0
    with np.load(tmp_path / "s" / "samples.npz") as npz:
        assert npz["arr_1"].tolist() == [3, 5, 9, 3]
    assert info_of(tmp_path / "s")["classes"] == [3, 5, 9]

    assert sample_run(named_run, tmp_path / "bad", "--classes", "3,sevn") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'sevn' is neither a class name of this model" in err
    assert "0 eight, 1 five, 2 four" in err and "9 zero" in err
    assert sample_run(named_run, tmp_path / "bad", "--classes", "12") == 2
    assert r"classes [12] are out of range" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_dpm_solver_takes_quadratic_steps_for_a_bare_count_and_says_so(
    checkpoints, tmp_path, capsys
):
    run_folder = checkpoints["run"]  # random output layers: the samples show every step

    def run(name, *options):
        argv = ["--sampler", "dpm++2m", "--classes", "2", *options]
        assert sample_run(run_folder, tmp_path / name, *argv) == 0
        with np.load(tmp_path / name / "samples.npz") as npz:
            images = npz["arr_0"].astype(int)
        return images, info_of(tmp_path / name)["steps"], capsys.readouterr().out

    bare, steps, out = run("bare", "--steps", "4")
    assert steps == "quad4"
    assert out.count("dpm++2m with 4 steps walks quad4") == 1 and "give even4" in out
    quad, steps, out = run("quad", "--steps", "quad4")
    assert steps == "quad4" and "walks" not in out
    np.testing.assert_array_equal(bare, quad)
    even, steps, out = run("even", "--steps", "even4")
    assert steps == "even4" and "walks" not in out
    assert np.abs(even - quad).max() > 1  # other steps, other samples
    # Other samplers keep a bare count evenly spaced.
    assert sample_run(run_folder, tmp_path / "ddim", "--sampler", "ddim", "--steps", "4") == 0
    assert info_of(tmp_path / "ddim")["steps"] == "4" and "walks" not in capsys.readouterr().out


def test_the_default_path_is_dpm_solver_with_20_quadratic_steps(checkpoints, tmp_path, capsys):
    out = tmp_path / "default"
    argv = ["sample", str(checkpoints["run"]), "--n", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    info = info_of(out)
    assert (info["sampler"], info["steps"]) == ("dpm++2m", "quad20")
    assert "dpm++2m with 20 steps walks quad20" in capsys.readouterr().out
    # eta belongs to DDIM: asked for without --sampler ddim, a clear error and nothing written
    assert main([*argv[:-3], "--out", str(tmp_path / "eta"), "--eta", "1"]) == 2
    assert "eta is DDIM's" in capsys.readouterr().err and not (tmp_path / "eta").exists()


def interrupt_batch(monkeypatch, signal_name, every: int = 2):
    """Make every ``every``-th batch (the second of every run by default) stop as Ctrl-C
    (SIGINT) or ``kill`` (SIGTERM) would stop it: while it is being sampled."""
    real, calls = Stage.sample, []

    def sample(self, *args, **kwargs):
        calls.append(None)
        if len(calls) % every == 0:
            if signal_name == "SIGINT":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, to the handler installed
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Stage, "sample", sample)


def tree(folder):
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.*")}


@pytest.mark.parametrize(("signal_name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_run_keeps_its_finished_batches_beside_the_output(
    checkpoints, tmp_path, capsys, monkeypatch, signal_name, status
):
    def run(out, *options):
        argv = ["--batch-size", "2", "--classes", "1,2,3", "--seed", "4", *options]
        return sample_run(checkpoints["run"], out, *argv)  # --n 4

    full = tmp_path / "full"
    assert run(full, "--n", "5") == 0  # streamed, then the same folder as before
    assert sorted(p.name for p in full.iterdir()) == [
        "grid.png",
        "images",
        "info.json",
        "samples.npz",
    ]
    assert sorted(p.name for p in (full / "images").iterdir()) == [f"{i:06d}.png" for i in range(5)]
    before = tree(full)
    capsys.readouterr()

    interrupt_batch(monkeypatch, signal_name)
    out = tmp_path / "new"
    assert run(out, "--n", "5") == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{signal_name}: stopped after 2 of 5 samples" in err
    assert str(tmp_path / "new.partial") in err
    assert not out.exists() and not list(tmp_path.glob(".new*"))  # no temporary left
    partial = tmp_path / "new.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["images", "info.json"]
    kept = tree(partial / "images")
    assert kept == {name: before[f"images/{name}"] for name in ("000000.png", "000001.png")}
    info = info_of(partial)
    assert [info[key] for key in ("num_samples", "num_requested", "interrupted_by")] == [
        2,
        5,
        signal_name,
    ]
    # the precision "auto" chose for this run too, so that the rest is made alike
    assert "--seed 6 --n 3 --classes 3,1,2 --precision fp32" in info["rest"] and info["checkpoint"]

    # An earlier output is left as it was, even with --overwrite; partials never replace
    # each other.
    assert run(full, "--n", "5", "--overwrite") == status
    assert run(full, "--n", "5", "--overwrite") == status
    assert tree(full) == before
    for name in ("full.partial", "full.partial-2"):
        assert tree(tmp_path / name / "images") == kept

    # The advice makes the other samples: the same as the uninterrupted run's.
    monkeypatch.undo()
    assert run(tmp_path / "rest", "--seed", "6", "--n", "3", "--classes", "3,1,2") == 0
    with np.load(full / "samples.npz") as npz, np.load(tmp_path / "rest" / "samples.npz") as rest:
        np.testing.assert_array_equal(rest["arr_1"], npz["arr_1"][2:])
        # Within one level: the batches differ, and with them the CPU kernels' rounding.
        assert np.abs(rest["arr_0"].astype(int) - npz["arr_0"][2:]).max() <= 1


def test_a_run_interrupted_before_its_first_sample_leaves_nothing(
    checkpoints, tmp_path, capsys, monkeypatch
):
    interrupt_batch(monkeypatch, "SIGINT", every=1)
    assert sample_run(checkpoints["run"], tmp_path / "out", "--batch-size", "2") == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stopped after 0 of 4 samples; nothing was kept" in err
    assert list(tmp_path.iterdir()) == []  # no output, no empty out.partial, no temporary
