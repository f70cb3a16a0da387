"""The diffusers bridge: ``diffuse export diffusers`` and ``diffuse convert diffusers``.

Every check runs diffusers itself on what was exported (its UNet2DModel, its schedulers,
its DDIMPipeline) or converts what diffusers wrote.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from diffuse.checkpoint import load_checkpoint, save_checkpoint
from diffuse.cli import main
from diffuse.convert import config_from_openai, openai_key_map
from diffuse.diffusion import (
    ClassifierFreeGuidance,
    DiffusionConfig,
    ddim_sample,
    randn,
    seeded_generators,
)
from diffuse.diffusion.schedules import space_timesteps
from diffuse.interop.scheduler import scheduler_config
from diffuse.nn import SuperResConfig, UNetConfig, build_network
from diffuse.sample import SamplerSettings
from helpers.sample_models import randomized

diffusers = pytest.importorskip("diffusers")

FIXTURES = Path(__file__).parents[1] / "fixtures" / "openai"
# Float32 kernels (convolutions, attention, cumulative products of the schedule) sum in
# different orders in the two libraries; measured differences are below 1e-5.
ATOL = 1e-4

# A class-conditional 8x8 grey model with a null class for guidance, as the digits preset.
CONDITIONAL = (
    UNetConfig(
        image_size=8,
        in_channels=1,
        out_channels=1,
        model_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        num_head_channels=16,
        norm_groups=8,
        num_classes=10,
        null_class=True,
    ),
    DiffusionConfig("cosine", 1000, "eps", "fixed_small", "mse"),
)
# ADM's design: BigGAN resampling, scale-shift norm, legacy q, k, v order, a learned
# variance range, v-prediction, the linear schedule; settings diffusers has no place for
# (the loss, gradient checkpointing) travel in diffuse.json.
ADM = (
    UNetConfig(
        image_size=16,
        in_channels=3,
        out_channels=6,
        model_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        num_head_channels=8,
        attention_order="legacy",
        dropout=0.1,
        resample="resblock",
        norm_groups=8,
        gradient_checkpointing=True,
    ),
    DiffusionConfig("linear", 1000, "v", "learned_range", "hybrid"),
)
# An unconditional DDPM-style model (additive conditioning, attention at the first level
# too, two heads there), which DDIMPipeline runs as it is.
UNCONDITIONAL = (
    UNetConfig(
        image_size=8,
        in_channels=1,
        out_channels=1,
        model_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        num_head_channels=8,
        scale_shift_norm=False,
        norm_groups=8,
    ),
    DiffusionConfig("linear", 1000, "eps", "fixed_small", "mse"),
)
MODELS = {"conditional": CONDITIONAL, "adm": ADM, "unconditional": UNCONDITIONAL}


def write_checkpoint(folder: Path, config, diffusion, seed: int = 0) -> Path:
    """A checkpoint of random weights, with EMA weights (what is exported by default)."""
    model = randomized(build_network(config), seed)
    ema = {k: v + 0.01 for k, v in model.state_dict().items()}
    metadata = {"class_names": [f"c{i}" for i in range(10)], "dataset": "test"}
    return save_checkpoint(
        folder, model, diffusion=diffusion, ema={0.999: ema}, step=7, metadata=metadata
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each of MODELS as a checkpoint and as its diffusers export, made with the CLI."""
    made = {}
    for name, (config, diffusion) in MODELS.items():
        root = tmp_path_factory.mktemp(name)
        checkpoint = write_checkpoint(root / "ckpt", config, diffusion)
        assert main(["export", "diffusers", str(checkpoint), str(root / "hf")]) == 0
        made[name] = checkpoint, root / "hf"
    return made


def test_export_writes_a_pipeline_folder_and_the_exact_settings(exported):
    _, out = exported["adm"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "diffuse.json",
        "model_index.json",
        "scheduler",
        "scheduler/scheduler_config.json",
        "unet",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    index = json.loads((out / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    sidecar = json.loads((out / "diffuse.json").read_text())
    assert sidecar["model"] == ADM[0].to_dict() and sidecar["diffusion"] == ADM[1].to_dict()
    assert sidecar["exported_from"]["weights"] == "ema_0.999"
    # Files in sub-folders get the umask's permissions too (safetensors writes them private).
    weights = out / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_mode & 0o044 == (out / "diffuse.json").stat().st_mode & 0o044


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_then_convert_gives_back_the_checkpoint_exactly(exported, name, tmp_path):
    checkpoint, out = exported[name]
    assert main(["convert", "diffusers", str(out), str(tmp_path / "back")]) == 0
    before, after = load_checkpoint(checkpoint), load_checkpoint(tmp_path / "back")
    assert after.config["model"] == before.config["model"]
    assert after.diffusion == before.diffusion
    assert after.metadata["class_names"] == before.metadata["class_names"]
    assert after.metadata["source_format"] == "diffusers"
    ours, theirs = before.model.state_dict(), after.model.state_dict()  # the EMA weights
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_diffusers_loads_the_export_and_computes_what_we_compute(exported, name):
    checkpoint, out = exported[name]
    ours = load_checkpoint(checkpoint)
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet").eval()
    config = ours.model.config
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(
        4, config.in_channels, config.image_size, config.image_size, generator=generator
    )
    t = torch.tensor([0, 1, 500, 999])
    labels = None
    if config.num_classes is not None:
        labels = torch.tensor([0, 9, config.num_classes, 4])  # the null class among them
        assert unet.config.num_class_embeds == config.num_classes + 1
    with torch.no_grad():
        expected = ours.model(x, t, labels)
        got = unet(x, t, class_labels=labels).sample
    assert expected.abs().max() > 0.1  # a network that computes something
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)
    scheduler = diffusers.DDPMScheduler.from_pretrained(out / "scheduler")
    diffusion = ours.diffusion
    process = diffusion.build()
    assert scheduler.config.num_train_timesteps == diffusion.timesteps
    # Float32 in diffusers, float64 here: the same betas to float32 rounding.
    np.testing.assert_allclose(scheduler.betas.numpy(), process.betas, rtol=1e-5)
    expected_types = {"eps": "epsilon", "v": "v_prediction"}[diffusion.prediction]
    assert scheduler.config.prediction_type == expected_types
    assert scheduler.config.variance_type == diffusion.variance


def test_ddim_pipeline_draws_what_diffuse_sample_draws(exported, tmp_path):
    checkpoint, out = exported["unconditional"]
    pipeline = diffusers.DDIMPipeline.from_pretrained(out)
    pipeline.set_progress_bar_config(disable=True)
    n, steps = 4, 20
    images = pipeline(
        batch_size=n,
        generator=seeded_generators(range(n)),  # sample i from seed i, as diffuse sample
        num_inference_steps=steps,
        eta=0.0,
        use_clipped_model_output=True,  # the noise of the clipped x0, as guided-diffusion
        output_type="pt",
    ).images
    # The timesteps diffusers walks are those of our "ddim20".
    assert pipeline.scheduler.timesteps.tolist() == space_timesteps(1000, f"ddim{steps}")[::-1]

    ckpt = load_checkpoint(checkpoint)
    process = SamplerSettings("ddim", f"ddim{steps}").process(ckpt.diffusion.build())
    x_T = randn((n, 1, 8, 8), seeded_generators(range(n)))
    ours = ddim_sample(ckpt.model, process, x_T)
    expected = (ours / 2 + 0.5).clamp(0, 1)
    assert expected.std() > 0.05  # images, not a constant
    torch.testing.assert_close(images, expected, rtol=0, atol=ATOL)

    argv = ["sample", str(checkpoint), "--n", str(n), "--sampler", "ddim", "--steps"]
    assert main([*argv, f"ddim{steps}", "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    with np.load(tmp_path / "s" / "samples.npz") as saved:
        written = saved["arr_0"].astype(int)
    theirs = (images * 255).round().permute(0, 2, 3, 1).numpy().astype(int)
    # 8-bit files: a difference below ATOL moves a pixel only where it sits on a rounding edge.
    assert np.abs(written - theirs).max() <= 1 and (written == theirs).mean() > 0.99


def test_ddim_scheduler_guides_a_class_conditional_export_as_we_do(exported):
    checkpoint, out = exported["conditional"]
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet").eval()
    scheduler = diffusers.DDIMScheduler.from_pretrained(out / "scheduler")
    scheduler.set_timesteps(20)
    ckpt = load_checkpoint(checkpoint)
    null = ckpt.model.null_class
    labels = torch.tensor([3, 7, null])
    x = randn((3, 1, 8, 8), seeded_generators(range(3)))
    w = 1.0  # classifier-free guidance, eps = (1 + w) eps(x, c) - w eps(x)
    with torch.no_grad():
        for t in scheduler.timesteps:
            both = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, labels * 0 + null]))
            conditional, unconditional = both.sample.chunk(2)
            eps = (1 + w) * conditional - w * unconditional
            x = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    process = SamplerSettings("ddim", "ddim20").process(ckpt.diffusion.build())
    guided = ClassifierFreeGuidance(ckpt.model, weight=w, null_class=null, channels=1)
    x_T = randn((3, 1, 8, 8), seeded_generators(range(3)))
    ours = ddim_sample(guided, process, x_T, model_kwargs={"y": labels})
    torch.testing.assert_close(x, ours, rtol=0, atol=ATOL)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_scheduler_takes_the_step_our_ddpm_takes(schedule, variance, prediction):
    diffusion = DiffusionConfig(schedule, 1000, prediction, variance, "kl")
    scheduler = diffusers.DDPMScheduler(**scheduler_config(diffusion))
    process = diffusion.build()
    np.testing.assert_allclose(scheduler.betas.numpy(), process.betas, rtol=1e-5)  # float32
    # diffusers keeps alpha-bar in float32, where 1 - alpha-bar near t = 0 loses three
    # digits (steps differ by up to 6e-4 there); with our float64 alpha-bar both formulas
    # agree to float64 rounding, which checks each one.
    scheduler.alphas_cumprod = torch.from_numpy(process.alphas_cumprod)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    channels = 2 * 3 if diffusion.learns_variance else 3
    for step in (999, 600, 10, 1, 0):
        x_t = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
        output = torch.randn(2, channels, 4, 4, generator=generator, dtype=torch.float64)
        output = output.clamp(-1, 1)  # a learned range's v in [-1, 1]
        seed = 100 + step
        theirs = scheduler.step(
            output, step, x_t, generator=torch.Generator().manual_seed(seed)
        ).prev_sample
        noise = torch.randn(
            x_t.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
        ours = process.ddpm_step(output, x_t, torch.full((2,), step), noise)
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-10, msg=f"step {step}")


def openai_checkpoint(tmp_path: Path, reference: dict, timestep_scale: float) -> Path:
    """``diffuse convert openai`` of random weights in the reference layout of
    ``reference`` ({"kind", "constructor"}), via the CLI."""
    config = config_from_openai(**reference, timestep_scale=timestep_scale)
    model = randomized(build_network(config))
    state = {theirs: model.state_dict()[ours] for ours, theirs in openai_key_map(model).items()}
    torch.save(state, tmp_path / "released.pt")
    (tmp_path / "reference.json").write_text(json.dumps(reference))
    argv = ["convert", "openai", str(tmp_path / "released.pt"), str(tmp_path / "converted")]
    argv += ["--reference-config", str(tmp_path / "reference.json")]
    assert main([*argv, "--timestep-scale", str(timestep_scale)]) == 0
    return tmp_path / "converted"


def test_a_released_openai_network_runs_in_diffusers_with_its_reference_outputs(tmp_path):
    spec = json.loads((FIXTURES / "unet_adm_small.json").read_text())
    torch.save(load_file(FIXTURES / "unet_adm_small.safetensors"), tmp_path / "adm.pt")
    (tmp_path / "adm.json").write_text(json.dumps(spec))
    argv = ["convert", "openai", str(tmp_path / "adm.pt"), str(tmp_path / "converted")]
    assert main([*argv, "--reference-config", str(tmp_path / "adm.json")]) == 0
    assert main(["export", "diffusers", str(tmp_path / "converted"), str(tmp_path / "hf")]) == 0
    # No diffusion settings in a --reference-config conversion: the UNet alone.
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["diffuse.json", "unet"]
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "hf" / "unet").eval()
    io = load_file(FIXTURES / "unet_adm_small.io.safetensors")
    with torch.no_grad():
        out = unet(io["x"], io["t"], class_labels=io["y"]).sample
    torch.testing.assert_close(out, io["out"], rtol=0, atol=ATOL)  # the reference's own output
    assert main(["convert", "diffusers", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    back, converted = load_checkpoint(tmp_path / "back"), load_checkpoint(tmp_path / "converted")
    assert back.config["model"] == converted.config["model"] and back.diffusion is None


def test_networks_and_settings_diffusers_cannot_express_are_refused_each_by_name(tmp_path, capsys):
    # improved-diffusion style: 4 heads at two widths, first level twice the base width,
    # timesteps rescaled to 1000 / 4000.
    reference = {
        "kind": "unet",
        "constructor": {
            "image_size": 16,
            "in_channels": 3,
            "model_channels": 16,
            "out_channels": 3,
            "num_res_blocks": 1,
            "attention_resolutions": [1, 2],
            "channel_mult": [2, 4],
            "num_heads": 4,
        },
    }
    converted = openai_checkpoint(tmp_path, reference, timestep_scale=0.25)
    out = tmp_path / "hf"
    assert main(["export", "diffusers", str(converted), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"nothing was written to {out}" in err
    assert "timestep_scale=0.25" in err
    assert "channel_mult[0]=2" in err
    assert "attention heads of 8, 16 channels" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "converted",
        "reference.json",
        "released.pt",
    ]  # no temporary folder left behind

    mean = DiffusionConfig("linear", 1000, "mean", "learned", "kl")
    write_checkpoint(tmp_path / "mean", dataclasses.replace(CONDITIONAL[0], out_channels=2), mean)
    assert main(["export", "diffusers", str(tmp_path / "mean"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "prediction 'mean'" in err and "variance 'learned'" in err
    superres = SuperResConfig.from_dict({**CONDITIONAL[0].to_dict(), "kind": "superres"})
    write_checkpoint(tmp_path / "sr", superres, CONDITIONAL[1])
    assert main(["export", "diffusers", str(tmp_path / "sr"), str(out)]) == 2
    assert "an upsampler network" in capsys.readouterr().err
    recipe = dataclasses.replace(
        CONDITIONAL[0], blocks=("res", "clsatn", "chnatn"), embedding_channels=48
    )
    write_checkpoint(tmp_path / "recipe", recipe, CONDITIONAL[1])
    assert main(["export", "diffusers", str(tmp_path / "recipe"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "blocks=res,clsatn,chnatn" in err and "embedding_channels=48" in err
    assert not out.exists()


def test_a_pipeline_saved_by_diffusers_converts(tmp_path):
    unet = diffusers.UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=None,
        norm_num_groups=8,
    ).eval()
    scheduler = diffusers.DDIMScheduler(prediction_type="v_prediction")  # linear, 1e-4..0.02
    diffusers.DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "hf")
    assert main(["convert", "diffusers", str(tmp_path / "hf"), str(tmp_path / "ckpt")]) == 0
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.diffusion == DiffusionConfig("linear", 1000, "v", "fixed_small", "mse")
    config = loaded.model.config
    assert (config.attention_resolutions, config.num_heads, config.resample) == ((8,), 1, "conv")
    generator = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16, generator=generator), torch.tensor([3, 800])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t), unet(x, t).sample, rtol=0, atol=ATOL)


def test_diffusers_settings_diffuse_cannot_build_are_refused_each_by_name(tmp_path, capsys):
    # google/ddpm-cifar10-32's embedding (sines first, shifted frequencies) and Stable
    # Diffusion's schedule.
    source = tmp_path / "hf"
    (source / "unet").mkdir(parents=True)
    (source / "scheduler").mkdir()
    unet = {"_class_name": "UNet2DModel", "flip_sin_to_cos": False, "freq_shift": 1}
    (source / "unet" / "config.json").write_text(json.dumps(unet))
    scheduler = {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear"}
    (source / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    assert main(["convert", "diffusers", str(source), str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing was written to" in err
    for named in ("flip_sin_to_cos=False", "freq_shift=1", "beta_schedule='scaled_linear'"):
        assert named in err
    assert not (tmp_path / "ckpt").exists()


def test_a_diffuse_json_that_no_longer_matches_is_ignored_with_a_warning(
    exported, tmp_path, capsys
):
    _, out = exported["conditional"]
    copy = tmp_path / "hf"
    for file in out.rglob("*"):
        if file.is_file():
            (copy / file.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            (copy / file.relative_to(out)).write_bytes(file.read_bytes())
    sidecar = json.loads((copy / "diffuse.json").read_text())
    sidecar["model"]["num_classes"] = 20
    (copy / "diffuse.json").write_text(json.dumps(sidecar))
    assert main(["convert", "diffusers", str(copy), str(tmp_path / "ckpt")]) == 0
    assert "describes another network" in capsys.readouterr().err
    config = load_checkpoint(tmp_path / "ckpt").model.config
    assert (config.num_classes, config.null_class) == (11, False)  # as the UNet2DModel says


def test_bad_inputs_exit_2_and_leave_everything_as_it_was(exported, tmp_path, capsys):
    checkpoint, out = exported["conditional"]

    def run(*argv: str) -> str:
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        return err

    assert "does not exist" in run(
        "export", "diffusers", str(tmp_path / "nothing"), str(tmp_path / "a")
    )
    assert not (tmp_path / "a").exists()
    earlier = tmp_path / "earlier"
    assert main(["export", "diffusers", str(checkpoint), str(earlier)]) == 0
    files = {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    assert "already exists" in run("export", "diffusers", str(checkpoint), str(earlier))
    assert {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == files
    assert main(["export", "diffusers", str(checkpoint), str(earlier), "--overwrite"]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    err = run("export", "diffusers", str(checkpoint), str(mine), "--overwrite")
    assert "diffuse did not write there (notes.txt)" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    assert "is not a folder" in run(
        "convert", "diffusers", str(tmp_path / "nothing"), str(tmp_path / "b")
    )
    assert "holds no unet/config.json" in run(
        "convert", "diffusers", str(mine), str(tmp_path / "b")
    )
    err = run("convert", "diffusers", str(out), str(mine), "--overwrite")
    assert "diffuse did not write there (notes.txt)" in err and (mine / "notes.txt").exists()
    broken = tmp_path / "broken"
    assert main(["export", "diffusers", str(checkpoint), str(broken)]) == 0
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({**load_file(weights), "extra.weight": torch.zeros(1)}, weights)
    err = run("convert", "diffusers", str(broken), str(tmp_path / "b"))
    assert "1 (extra.weight) unused" in err
    weights.rename(weights.with_suffix(".bin"))
    assert "pickled .bin weights only" in run(
        "convert", "diffusers", str(broken), str(tmp_path / "b")
    )
    assert not (tmp_path / "b").exists()


def test_without_diffusers_both_commands_say_how_to_install_it(
    exported, tmp_path, monkeypatch, capsys
):
    checkpoint, out = exported["conditional"]
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers raises ImportError
    assert main(["export", "diffusers", str(checkpoint), str(tmp_path / "a")]) == 2
    assert "pip install 'diffuse[diffusers]'" in capsys.readouterr().err
    assert main(["convert", "diffusers", str(out), str(tmp_path / "b")]) == 2
    assert "pip install 'diffuse[diffusers]'" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == []


def test_the_core_and_the_command_line_never_import_diffusers():
    code = (
        "import sys, diffuse, diffuse.cli, diffuse.interop, diffuse.checkpoint, diffuse.sample; "
        "diffuse.cli.build_parser(); print('diffusers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
