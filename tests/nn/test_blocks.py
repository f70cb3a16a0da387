"""The recipe blocks (ConvNeXt, class attention, ECA) and block recipes in the U-Net: shapes,
gradients, known inputs, validation, the unchanged default, checkpoints and the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffuse import presets
from diffuse.checkpoint import load_checkpoint, save_checkpoint
from diffuse.cli import main
from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.errors import ConfigError
from diffuse.nn import ClassifierConfig, UNet, UNetConfig, build_network, config_from_dict
from diffuse.nn.blocks import ChannelAttention, ClassAttention, ConvNeXtBlock, eca_kernel_size
from diffuse.train.spec import classifier_for
from helpers.train_processes import QUICK

# Every block once, spatial attention at the 4x4 level: an 8x8 class-conditional U-Net.
RECIPE = ("res", "conv", "clsatn", "atn", "chnatn")
TINY = dict(
    image_size=8,
    in_channels=1,
    out_channels=2,
    model_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(4,),
    num_head_channels=8,
    norm_groups=8,
    num_classes=3,
    null_class=True,
)


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module`` with every parameter redrawn (zero-initialised outputs start as identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return module


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def check_shape_and_gradients(block, x, *conditioning, out_channels):
    """The block maps x to [N, out_channels, H, W] and every parameter gets a gradient."""
    x = x.clone().requires_grad_()
    out = block(x, *conditioning)
    assert out.shape == (x.shape[0], out_channels, *x.shape[2:])
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# --------------------------------------------------------------- the blocks alone


@pytest.mark.parametrize(("in_channels", "out_channels"), [(16, 16), (24, 16)])
@pytest.mark.parametrize("scale_shift", [True, False])
def test_convnext_block_shapes_and_gradients(in_channels, out_channels, scale_shift):
    block = ConvNeXtBlock(
        in_channels, out_channels, 32, dropout=0.0, scale_shift_norm=scale_shift, norm_groups=8
    )
    assert block.expand.out_channels == 4 * out_channels  # ConvNeXt's inverted bottleneck
    check_shape_and_gradients(
        randomized(block), randn(2, in_channels, 6, 6), randn(2, 32), out_channels=out_channels
    )


def test_convnext_block_is_the_formula_and_a_fresh_one_passes_x_through():
    block = ConvNeXtBlock(8, 8, 12, dropout=0.0, scale_shift_norm=True, norm_groups=4)
    x, emb = randn(2, 8, 5, 5), randn(2, 12, seed=2)
    torch.testing.assert_close(block(x, emb), x)  # zero-initialised projection: identity
    block = randomized(block)
    h = F.conv2d(x, block.depthwise.weight, block.depthwise.bias, padding=3, groups=8)
    scale, shift = (emb @ block.embedding.weight.T + block.embedding.bias).chunk(2, dim=1)
    h = F.group_norm(h, 4, block.norm.weight, block.norm.bias)
    h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    h = F.gelu(F.conv2d(h, block.expand.weight, block.expand.bias))
    expected = x + F.conv2d(h, block.project.weight, block.project.bias)
    # The block fuses the scale-shift into one addcmul, the reference multiplies then adds:
    # the last bits of float32 may differ; 1e-5 is far below any real error.
    torch.testing.assert_close(block(x, emb), expected, rtol=1e-5, atol=1e-5)


def test_class_attention_shapes_and_gradients():
    block = randomized(ClassAttention(16, 24, heads=2, norm_groups=8))
    check_shape_and_gradients(block, randn(2, 16, 4, 4), randn(2, 2, 24), out_channels=16)


def test_class_attention_with_blank_queries_adds_the_mean_of_the_two_values():
    # Zero queries give every key the same score: each pixel gets (v_time + v_class) / 2,
    # projected by W_o (here the identity).
    block = randomized(ClassAttention(4, 6, heads=2, norm_groups=2))
    with torch.no_grad():
        block.query.weight.zero_()
        block.query.bias.zero_()
        block.proj.weight.copy_(torch.eye(4))
        block.proj.bias.zero_()
    x, tokens = randn(1, 4, 3, 3), randn(1, 2, 6, seed=2)
    values = (tokens @ block.key_value.weight.T + block.key_value.bias)[..., 4:]
    expected = x + values.mean(dim=1)[:, :, None, None]
    torch.testing.assert_close(block(x, tokens), expected)


def test_class_attention_injects_the_class_pixel_by_pixel():
    block = randomized(ClassAttention(8, 12, heads=2, norm_groups=4)).eval()
    x, time, label = randn(1, 8, 4, 4), randn(1, 12, seed=2), randn(1, 12, seed=3)
    other_label = randn(1, 12, seed=4)
    with torch.no_grad():
        out = block(x, torch.stack([time, label], dim=1))
        other = block(x, torch.stack([time, other_label], dim=1))
        later = block(x, torch.stack([other_label, label], dim=1))
    change = (other - out).abs()
    assert change.min() > 1e-4  # every pixel and channel learns the class changed
    assert not torch.allclose(later, out)  # the time token counts too
    # The change differs between pixels: attention weights are per pixel, not a bias.
    assert change.flatten(2).std(dim=2).min() > 1e-4


@pytest.mark.parametrize(
    ("channels", "kernel"),
    [(2, 1), (8, 3), (16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5),
     (2048, 7), (8192, 7), (32768, 9)],
)  # fmt: skip
def test_eca_kernel_size_is_the_odd_part_of_log2_c_over_gamma_plus_b_over_gamma(channels, kernel):
    # k = |log2(C) / 2 + 1 / 2|_odd: 128 -> 4 -> 5, 64 -> 3.5 -> 3, 2048 -> 6 -> 7.
    assert eca_kernel_size(channels) == kernel
    assert ChannelAttention(channels).conv.kernel_size == (kernel,)


def test_channel_attention_gates_each_channel_by_its_neighbours_means():
    block = ChannelAttention(16)  # kernel 3
    with torch.no_grad():
        block.conv.weight.copy_(torch.tensor([[[0.5, -1.0, 2.0]]]))
    x = randn(2, 16, 3, 3)
    check_shape_and_gradients(block, x, out_channels=16)
    means = x.mean(dim=(2, 3))
    padded = F.pad(means, (1, 1))  # zero padding at both ends of the channel axis
    score = 0.5 * padded[:, :-2] - 1.0 * padded[:, 1:-1] + 2.0 * padded[:, 2:]
    expected = x * torch.sigmoid(score)[:, :, None, None]
    torch.testing.assert_close(block(x), expected)
    assert not any(name.endswith("bias") for name, _ in block.named_parameters())


# --------------------------------------------------------------- recipes in the U-Net


def test_every_block_of_a_recipe_is_built_where_it_belongs():
    model = UNet(UNetConfig(**TINY, blocks=RECIPE))
    first = model.encoder.levels[0].blocks[0]  # 8x8: no spatial attention
    last = model.encoder.levels[1].blocks[0]  # 4x4: attention_resolutions
    assert [name for name, _ in first.named_children()] == ["res", "conv", "clsatn", "chnatn"]
    assert [name for name, _ in last.named_children()] == [
        "res", "conv", "clsatn", "attn", "chnatn",
    ]  # fmt: skip
    assert isinstance(last.conv, ConvNeXtBlock) and isinstance(last.chnatn, ChannelAttention)
    # The decoder's units widen from the skip concatenation in their first block only.
    decoder_unit = model.decoder.levels[0].blocks[0]
    assert decoder_unit.res.conv1.in_channels == 32 + 16
    assert decoder_unit.conv.depthwise.in_channels == 16
    twice = UNet(UNetConfig(**TINY, blocks=("res", "res", "chnatn", "chnatn")))
    names = [name for name, _ in twice.encoder.levels[0].blocks[0].named_children()]
    assert names == ["res", "res2", "chnatn", "chnatn2"]


def test_a_recipe_network_trains_its_every_parameter_and_uses_the_class():
    model = randomized(UNet(UNetConfig(**TINY, blocks=RECIPE))).train()
    x, t = randn(2, 1, 8, 8), torch.tensor([3, 800])
    out = model(x, t, torch.tensor([0, 1]))
    assert out.shape == (2, 2, 8, 8)
    out.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        base = model(x, t, torch.tensor([0, 1]))
        other = model(x, t, torch.tensor([2, 1]))
        unconditional = model(x, t)  # the null class
    assert not torch.allclose(base[0], other[0])
    torch.testing.assert_close(base[1], other[1])
    assert not torch.allclose(base, unconditional)


def test_a_recipe_network_runs_under_bf16_autocast_close_to_float32():
    model = randomized(UNet(UNetConfig(**TINY, blocks=RECIPE)), seed=3).eval()
    x, t, y = randn(2, 1, 8, 8), torch.tensor([3, 800]), torch.tensor([0, 2])
    with torch.no_grad():
        reference = model(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t, y)
    assert low.dtype == torch.bfloat16
    # bf16 keeps 8 significant bits (0.4 % per rounding); through the network's layers the
    # output moves by about 1 % (1.4 % measured), as the papers' networks do (test_unet).
    assert (low.float() - reference).norm() / reference.norm() < 0.03


def test_gradient_checkpointing_of_a_recipe_gives_the_same_gradients():
    config = UNetConfig(**TINY, blocks=RECIPE)
    plain = randomized(UNet(config)).train()
    checkpointed = UNet(UNetConfig(**TINY, blocks=RECIPE, gradient_checkpointing=True)).train()
    checkpointed.load_state_dict(plain.state_dict())
    x, t, y = randn(2, 1, 8, 8), torch.tensor([3, 800]), torch.tensor([0, 2])
    for model in (plain, checkpointed):
        model(x, t, y).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        # recomputation runs the same kernels on the same inputs: equal up to summation order
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_default_recipe_is_the_papers_network_unchanged():
    # Parameter names and shapes recorded before recipes existed: checkpoints, convert
    # openai and the presets' published counts depend on them.
    pinned = {
        "fashion": (247, "b04e632d47305790"),
        "adm-imagenet64": (541, "542bc3d94c30b7bf"),
        "ddpm-cifar10": (304, "2d54c2345c1fabbf"),
    }
    for name, (count, digest) in pinned.items():
        model = presets.build(name)
        assert model.config.blocks == ("res", "atn")
        lines = [f"{key} {tuple(value.shape)}" for key, value in model.state_dict().items()]
        assert len(lines) == count, name
        assert hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16] == digest, name
    unit = dict(presets.build("fashion").encoder.levels[1].blocks[0].named_children())
    assert list(unit) == ["res", "attn"]


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        (("res", "mlp"), r"blocks entry 1 'mlp' is not a block; valid blocks: res, conv, atn, "
                         r"clsatn, chnatn"),
        ((), "non-empty list of block names"),
        (("clsatn", "res"), r"must start with 'res' or 'conv'.*\['clsatn', 'res'\]"),
        (7, "non-empty list of block names"),
    ],
)  # fmt: skip
def test_bad_recipes_are_named_with_the_valid_blocks(blocks, message):
    with pytest.raises(ConfigError, match=message):
        UNetConfig(**TINY, blocks=blocks)


def test_class_attention_needs_class_labels():
    unconditional = {**TINY, "num_classes": None, "null_class": False}
    with pytest.raises(ConfigError, match=r"'clsatn'.*unet network takes none; set num_classes"):
        UNetConfig(**unconditional, blocks=("res", "clsatn"))
    shared = {k: v for k, v in TINY.items() if k not in ("num_classes", "null_class")}
    with pytest.raises(ConfigError, match="classifier network takes none"):
        ClassifierConfig(**shared, blocks=("res", "clsatn"))
    # A noisy classifier made for a recipe network keeps the recipe but not class attention.
    classifier = classifier_for(UNetConfig(**TINY, blocks=RECIPE))
    assert classifier.blocks == ("res", "conv", "atn", "chnatn")
    assert build_network(classifier)(randn(2, 1, 8, 8), torch.tensor([1, 2])).shape == (2, 3)


def test_one_block_name_is_a_one_block_recipe_and_the_embedding_width_is_free():
    config = UNetConfig(**TINY, blocks="conv", embedding_channels=40)
    assert config.blocks == ("conv",)
    model = UNet(config)
    assert model.time_embed.linear2.out_features == 40
    assert model.class_embed.embedding_dim == 40
    assert UNetConfig(**TINY).embedding_channels == 4 * 16  # the papers' 4 x width
    with pytest.raises(ConfigError, match="embedding_channels must be a positive integer"):
        UNetConfig(**TINY, embedding_channels=0)


def test_a_recipe_round_trips_through_json_and_a_checkpoint(tmp_path):
    config = UNetConfig(**TINY, blocks=RECIPE, embedding_channels=40)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["blocks"] == list(RECIPE) and data["embedding_channels"] == 40
    assert config_from_dict(data) == config
    model = randomized(build_network(config)).eval()
    diffusion = DiffusionConfig("cosine", 100, "eps", "learned_range", "hybrid")
    save_checkpoint(tmp_path / "ckpt", model, diffusion=diffusion, step=3)
    stored = json.loads((tmp_path / "ckpt/config.json").read_text())
    assert stored["model"]["blocks"] == list(RECIPE)
    loaded = load_checkpoint(tmp_path / "ckpt", weights="model")
    assert loaded.model.config == config
    x, t, y = randn(2, 1, 8, 8), torch.tensor([3, 70]), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t, y), model(x, t, y), rtol=0, atol=0)


def test_a_checkpoint_written_before_recipes_loads_with_the_default(tmp_path):
    config = UNetConfig(**TINY)
    save_checkpoint(tmp_path / "old", build_network(config), step=1)
    path = tmp_path / "old/config.json"
    stored = json.loads(path.read_text())
    del stored["model"]["blocks"], stored["model"]["embedding_channels"]
    path.write_text(json.dumps(stored))
    assert load_checkpoint(tmp_path / "old", weights="model").model.config == config


# --------------------------------------------------------------- from the command line


def test_an_article_preset_trains_and_samples_from_the_command_line(tmp_path, capsys):
    run, samples = tmp_path / "run", tmp_path / "samples"
    argv = [
        "train", "--preset", "fashion-article-res-res-atn", "--data", "digits",
        "--out", str(run), "--set", "model.image_size=8",
        "--set", "model.attention_resolutions=[2]", "--steps", "2", "--batch-size", "4", *QUICK,
    ]  # fmt: skip
    assert main(argv) == 0
    assert "trained steps 0 -> 2" in capsys.readouterr().out
    checkpoint = load_checkpoint(run)
    assert checkpoint.model.config.blocks == ("res", "res", "clsatn", "atn", "chnatn")
    assert json.loads((run / "run.json").read_text())["train"]["p_uncond"] == 0.2
    argv = ["sample", str(run), "--n", "2", "--steps", "3", "--out", str(samples)]
    assert main([*argv, "--classes", "4", "--no-progress"]) == 0
    assert "2 samples (8x8x1) written" in capsys.readouterr().out
    with np.load(samples / "samples.npz") as npz:
        assert npz["arr_0"].shape == (2, 8, 8, 1) and npz["arr_1"].tolist() == [4, 4]


def test_train_help_lists_the_blocks_a_recipe_draws_from(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "model.blocks: each level's block recipe, in order, from res, conv, atn, clsatn" in (
        help_text
    )


def test_a_recipe_set_on_the_command_line_is_checked_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "--preset", "tiny", "--data", "digits", "--out", str(run), *QUICK]
    assert main([*base, "--steps", "1", "--batch-size", "4", "--set", "model.blocks=res,conv"]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*base, "--steps", "2", "--set", "model.blocks=res,atn,spatial"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "blocks entry 2 'spatial' is not a block; valid blocks: res, conv, atn" in error
    fresh = tmp_path / "fresh"
    argv = ["train", "--preset", "tiny", "--data", "digits", "--out", str(fresh)]
    assert main([*argv, "--set", "model.blocks=atn,res"]) == 2
    assert "must start with 'res' or 'conv'" in capsys.readouterr().err
    assert not fresh.exists()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
