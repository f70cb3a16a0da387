"""Checkpoint folders: round trips, run folders, and errors that leave files untouched."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from diffuse.checkpoint import (
    load_checkpoint,
    load_pretrained,
    resolve_checkpoint,
    save_checkpoint,
    write_checkpoint_files,
    write_tensors,
)
from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.errors import CheckpointError, ConfigError, CorruptCheckpointError, MissingFileError
from diffuse.nn import ClassifierConfig, SuperResConfig, UNetConfig, build_network

UNET = UNetConfig(
    image_size=8,
    in_channels=1,
    out_channels=2,
    model_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(4,),
    norm_groups=8,
    num_classes=3,
    null_class=True,
)
DIFFUSION = DiffusionConfig("cosine", 100, "eps", "learned_range", "hybrid")


def random_state(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        key: 0.2 * torch.randn(value.shape, generator=generator)
        for key, value in model.state_dict().items()
    }


def trained_model(config=UNET, seed: int = 0) -> torch.nn.Module:
    model = build_network(config)
    model.load_state_dict(random_state(model, seed))
    return model


def inputs(config=UNET):
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(
        2, config.in_channels, config.image_size, config.image_size, generator=generator
    )
    return x, torch.tensor([3, 70])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_restores_config_weights_ema_and_settings(tmp_path):
    model = trained_model().eval()
    ema = {0.999: random_state(model, 1), 0.9999: random_state(model, 2)}
    path = save_checkpoint(
        tmp_path / "ckpt",
        model,
        diffusion=DIFFUSION,
        ema=ema,
        step=1234,
        metadata={"dataset": "digits", "classes": ["a", "b", "c"]},
    )
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "ema_0.999.safetensors",
        "ema_0.9999.safetensors",
        "model.safetensors",
    ]
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "diffuse-checkpoint" and config["version"] == 1
    assert config["model"] == UNET.to_dict() and config["ema_rates"] == [0.999, 0.9999]

    x, t = inputs()
    y = torch.tensor([0, 3])
    raw = load_checkpoint(path, weights="model")
    assert raw.diffusion == DIFFUSION and raw.step == 1234 and raw.weights == "model"
    assert raw.metadata == {"dataset": "digits", "classes": ["a", "b", "c"]}
    assert not raw.model.training and raw.model.config == UNET
    with torch.no_grad():
        torch.testing.assert_close(raw.model(x, t, y), model(x, t, y), rtol=0, atol=0)

    auto = load_checkpoint(path)  # EMA of the largest rate
    assert auto.weights == "ema_0.9999"
    for key, value in auto.model.state_dict().items():
        torch.testing.assert_close(value, ema[0.9999][key], rtol=0, atol=0)
    assert load_checkpoint(path, weights="ema_0.999").weights == "ema_0.999"


@pytest.mark.parametrize(
    "config",
    [
        SuperResConfig(**asdict(UNET), low_res_size=4),
        ClassifierConfig(
            image_size=8,
            in_channels=1,
            out_channels=3,
            model_channels=16,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_resolutions=(4,),
            norm_groups=8,
        ),
    ],
    ids=["superres", "classifier"],
)
def test_every_network_kind_round_trips(tmp_path, config):
    model = trained_model(config).eval()
    x, t = inputs(config)
    kwargs = {"low_res": x[:, :, ::2, ::2]} if config.kind == "superres" else {}
    save_checkpoint(tmp_path / "c", model)
    loaded = load_pretrained(tmp_path / "c")
    assert type(loaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, **kwargs), model(x, t, **kwargs))


def test_a_run_folder_resolves_to_its_latest_checkpoint(tmp_path):
    model = trained_model()
    for step in (10, 200):
        save_checkpoint(tmp_path / "run" / "checkpoints" / f"step-{step:08d}", model, step=step)
    (tmp_path / "run" / "checkpoints" / "step-00009999.tmp").mkdir()  # not a checkpoint
    assert resolve_checkpoint(tmp_path / "run").name == "step-00000200"
    assert load_checkpoint(tmp_path / "run").step == 200


def test_write_checkpoint_files_lets_a_trainer_add_its_own(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "optimizer.pt").write_bytes(b"trainer state")
    write_checkpoint_files(folder, torch.compile(trained_model()), step=3)  # unwrapped
    assert load_checkpoint(folder).step == 3
    assert (folder / "optimizer.pt").read_bytes() == b"trainer state"


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="neither a checkpoint folder"):
        load_checkpoint(tmp_path / "empty")


def test_corrupt_or_incomplete_files_give_checkpoint_errors(tmp_path):
    path = save_checkpoint(
        tmp_path / "c", trained_model(), ema={0.99: random_state(trained_model(), 1)}
    )
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path, weights="model")
    (path / "ema_0.99.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"no weights 'ema_0\.5'.*ema_0\.99"):
        load_checkpoint(path, weights="ema_0.5")
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_checkpoint(path)


def test_a_truncated_weights_file_is_named_whichever_weights_are_loaded(tmp_path):
    path = save_checkpoint(
        tmp_path / "c", trained_model(), ema={0.99: random_state(trained_model(), 1)}
    )
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])  # the tensors no longer fill the file
    with pytest.raises(CorruptCheckpointError, match=rf"^{weights} is not a readable safetensors"):
        load_checkpoint(path, weights="ema_0.99")


def test_an_io_failure_while_writing_tensors_is_the_os_error_it_is(tmp_path):
    file = tmp_path / "no-such-folder" / "x.safetensors"
    with pytest.raises(FileNotFoundError) as caught:
        write_tensors(file, {"w": torch.zeros(3)})
    assert caught.value.errno == 2 and caught.value.filename == str(file)


def test_unknown_kind_or_version_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "c", trained_model())
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "version": 7}))
    with pytest.raises(CheckpointError, match="version 7"):
        load_checkpoint(path)
    config["model"]["kind"] = "transformer"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown network kind 'transformer'"):
        load_checkpoint(path)


def test_weights_of_another_architecture_name_the_mismatching_keys(tmp_path):
    path = save_checkpoint(tmp_path / "c", trained_model())
    config = json.loads((path / "config.json").read_text())
    config["model"]["num_res_blocks"] = 2  # the weights have one block per level
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"another architecture \(missing: decoder"):
        load_checkpoint(path)
    config["model"]["num_res_blocks"] = 1
    config["model"]["model_channels"] = 32
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shapes differ: .*\(32,\) vs"):
        load_checkpoint(path)


def test_bad_saves_leave_the_existing_checkpoint_untouched(tmp_path):
    path = save_checkpoint(tmp_path / "c", trained_model(), step=1)
    before = snapshot(path)
    with pytest.raises(ConfigError, match="already exists"):
        save_checkpoint(path, trained_model(seed=9))
    foreign = trained_model(replace(UNET, num_classes=4))
    with pytest.raises(CheckpointError, match=r"EMA weights at rate 0.9 belong to another"):
        save_checkpoint(path, trained_model(), ema={0.9: foreign.state_dict()}, overwrite=True)
    with pytest.raises(ConfigError, match="plain JSON"):
        save_checkpoint(path, trained_model(), metadata={"when": object()}, overwrite=True)
    assert snapshot(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary folder left behind
    save_checkpoint(path, trained_model(seed=9), step=2, overwrite=True)
    assert load_checkpoint(path).step == 2
