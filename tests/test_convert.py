"""Import of OpenAI's released networks: reference fixtures, checks, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffuse import presets
from diffuse.checkpoint import load_checkpoint
from diffuse.cli import main
from diffuse.convert import (
    config_from_openai,
    from_openai,
    load_openai_state_dict,
    openai_key_map,
)
from diffuse.errors import CheckpointError, ConfigError
from diffuse.nn import build_network

FIXTURES = Path(__file__).parent / "fixtures" / "openai"
NAMES = ["unet_adm_small", "classifier_small", "superres_small"]


def fixture(name: str):
    spec = json.loads((FIXTURES / f"{name}.json").read_text())
    return (
        spec,
        load_file(FIXTURES / f"{name}.safetensors"),
        load_file(FIXTURES / f"{name}.io.safetensors"),
    )


def conditioning(io: dict) -> dict:
    return {key: io[key] for key in ("y", "low_res") if key in io}


@pytest.mark.parametrize("name", NAMES)
def test_converted_reference_network_reproduces_its_outputs(name):
    spec, state, io = fixture(name)
    model = from_openai(spec["kind"], spec["constructor"], state)
    assert sum(p.numel() for p in model.parameters()) == spec["num_params"]
    with torch.no_grad():
        out = model(io["x"], io["t"], **conditioning(io))
    assert list(out.shape) == spec["output_shape"]
    assert (out - io["out"]).abs().max() < 1e-4


def test_unused_missing_or_misshapen_tensors_are_named():
    spec, state, _ = fixture("unet_adm_small")
    model = build_network(config_from_openai(spec["kind"], spec["constructor"]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"1 \(extra.weight\) unused"):
        load_openai_state_dict(model, {**state, "extra.weight": torch.zeros(1)})
    incomplete = {k: v for k, v in state.items() if k != "label_emb.weight"}
    with pytest.raises(CheckpointError, match=r"1 \(label_emb.weight\) missing"):
        load_openai_state_dict(model, incomplete)
    wrong = {**state, "out.2.weight": torch.zeros(3, 32, 3, 3)}
    with pytest.raises(CheckpointError, match=r"out.2.weight \(3, 32, 3, 3\) vs \(6, 32, 3, 3\)"):
        load_openai_state_dict(model, wrong)
    for key, value in model.state_dict().items():  # a failed load changes nothing
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_reference_constructor_errors_are_named():
    spec, _, _ = fixture("unet_adm_small")
    with pytest.raises(ConfigError, match=r"unknown \['use_flash'\]"):
        config_from_openai("unet", {**spec["constructor"], "use_flash": True})
    constructor = {k: v for k, v in spec["constructor"].items() if k != "image_size"}
    with pytest.raises(ConfigError, match=r"missing \['image_size'\]"):
        config_from_openai("unet", constructor)
    with pytest.raises(ConfigError, match="unknown network kind"):
        config_from_openai("vae", spec["constructor"])


def test_convolutional_resampling_uses_the_reference_key_names():
    # improved-diffusion's CIFAR-10 layout: Downsample holds "op", Upsample holds "conv",
    # and an upsampler shares the output block of its level's last residual block.
    keys = set(openai_key_map(presets.build("iddpm-cifar10")).values())
    assert {"input_blocks.4.0.op.weight", "output_blocks.3.1.conv.weight"} <= keys
    assert {"output_blocks.7.2.conv.weight", "output_blocks.5.1.qkv.weight"} <= keys
    assert "output_blocks.11.2.conv.weight" in keys  # 16x16 level: attention, then upsampling
    assert not any(key.startswith("output_blocks.15.1") for key in keys)  # top: neither


def write_pt(path: Path, state: dict) -> Path:
    torch.save({k: v.clone() for k, v in state.items()}, path)
    return path


def test_cli_converts_a_reference_file_into_a_checkpoint(tmp_path):
    _, state, io = fixture("superres_small")
    source = write_pt(tmp_path / "sr.pt", state)
    status = main(
        ["convert", "openai", str(source), str(tmp_path / "out"),
         "--reference-config", str(FIXTURES / "superres_small.json")]
    )  # fmt: skip
    assert status == 0
    loaded = load_checkpoint(tmp_path / "out")
    assert loaded.metadata["converted_from"] == "sr.pt" and loaded.diffusion is None
    with torch.no_grad():
        out = loaded.model(io["x"], io["t"], **conditioning(io))
    assert (out - io["out"]).abs().max() < 1e-4


def test_cli_with_a_preset_stores_its_diffusion_settings(tmp_path):
    model = presets.build("tiny", device="cpu")
    reference = {theirs: model.state_dict()[ours] for ours, theirs in openai_key_map(model).items()}
    source = write_pt(tmp_path / "tiny.pt", reference)
    assert main(["convert", "openai", str(source), str(tmp_path / "out"), "--preset", "tiny"]) == 0
    loaded = load_checkpoint(tmp_path / "out")
    assert loaded.diffusion == presets.get("tiny").diffusion
    assert loaded.metadata["preset"] == "tiny"


def test_cli_rejects_foreign_or_unsafe_files_and_leaves_the_output_alone(tmp_path, capsys):
    _, state, _ = fixture("unet_adm_small")
    foreign = write_pt(tmp_path / "foreign.pt", state)
    new = tmp_path / "new"
    assert main(["convert", "openai", str(foreign), str(new), "--preset", "tiny"]) == 2
    assert "does not match this architecture" in capsys.readouterr().err
    torch.save({"model": torch.nn.Linear(1, 1)}, tmp_path / "pickled.pt")
    args = ["convert", "openai", str(tmp_path / "pickled.pt"), "--preset", "tiny"]
    assert main([*args, str(new)]) == 2
    assert "weights_only=True" in capsys.readouterr().err
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([*args, str(out)]) == 2  # exists and no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main([*args, str(out), "--overwrite"]) == 2  # keep.txt is not diffuse's to replace
    assert "diffuse did not write there (keep.txt)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.pt", "out", "pickled.pt"]
