"""The U-Net: shapes of every family, conditioning, dropout, attention, precision, tracing."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import diffuse.nn.layers as layers
from diffuse.errors import ConfigError, DataError
from diffuse.nn import UNet, UNetConfig, config_from_dict
from diffuse.nn.layers import GroupNorm32, multihead_attention, timestep_embedding
from helpers.sample_models import RGB_16, randomized

# Small versions of the three papers' U-Nets.
FAMILIES = {
    "ddpm": dict(scale_shift_norm=False, resample="conv", num_heads=1),
    "iddpm": dict(scale_shift_norm=True, resample="conv", num_heads=2, attention_order="legacy"),
    "adm": dict(scale_shift_norm=True, resample="resblock", num_head_channels=8),
}


def small_config(**overrides) -> UNetConfig:
    return UNetConfig(**{**RGB_16, **overrides})


def inputs(n: int = 2, size: int = 16, channels: int = 3, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=generator)
    t = torch.randint(0, 1000, (n,), generator=generator)
    return x, t


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_maps_images_to_images_and_starts_at_zero(family):
    model = UNet(small_config(**FAMILIES[family])).eval()
    x, t = inputs()
    with torch.no_grad():
        out = model(x, t)
    assert out.shape == (2, 6, 16, 16)
    assert torch.count_nonzero(out) == 0  # zero-initialised output layers (ADM)
    with torch.no_grad():
        out = randomized(model)(x, t)
    assert out.abs().mean() > 0


def test_timestep_and_class_conditioning_change_the_output():
    model = randomized(UNet(small_config(num_classes=3))).eval()
    x, t = inputs()
    with torch.no_grad():
        base = model(x, t, torch.tensor([0, 1]))
        other_label = model(x, t, torch.tensor([2, 1]))
        other_time = model(x, t + 1, torch.tensor([0, 1]))
    assert not torch.allclose(base[0], other_label[0])
    torch.testing.assert_close(base[1], other_label[1])  # the other image is unaffected
    assert not torch.allclose(base, other_time)


def test_null_class_is_the_extra_label_and_the_default():
    model = randomized(UNet(small_config(num_classes=3, null_class=True))).eval()
    assert model.num_classes == 3 and model.null_class == 3
    assert model.class_embed.num_embeddings == 4
    x, t = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), model(x, t, torch.tensor([3, 3])))


def test_labels_must_match_the_conditioning():
    x, t = inputs()
    with pytest.raises(ConfigError, match="unconditional"):
        UNet(small_config())(x, t, torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="pass labels y"):
        UNet(small_config(num_classes=3))(x, t)
    with pytest.raises(DataError, match=r"shape \[2\]"):
        UNet(small_config(num_classes=3))(x, t, torch.tensor([0]))


def test_wrong_image_size_or_timesteps_are_named():
    model = UNet(small_config())
    with pytest.raises(DataError, match=r"\[N, 3, 16, 16\].*\(2, 3, 8, 8\)"):
        model(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(DataError, match="one per image"):
        model(torch.zeros(2, 3, 16, 16), torch.zeros(3, dtype=torch.long))


def test_dropout_acts_only_in_training_mode():
    model = randomized(UNet(small_config(dropout=0.5)))
    x, t = inputs()
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x, t), model(x, t))
        model.train()
        assert not torch.allclose(model(x, t), model(x, t))


def test_timestep_embedding_is_the_sinusoidal_formula():
    t = torch.tensor([0, 3, 999])
    dim = 7
    emb = timestep_embedding(t, dim)
    half = dim // 2
    for row, step in enumerate(t.tolist()):
        for i in range(half):
            angle = step * math.exp(-math.log(10000) * i / half)
            assert emb[row, i].item() == pytest.approx(math.cos(angle), abs=1e-5)
            assert emb[row, half + i].item() == pytest.approx(math.sin(angle), abs=1e-5)
        assert emb[row, -1] == 0  # odd width: one zero feature


def test_timestep_scale_embeds_scaled_timesteps():
    scaled = randomized(UNet(small_config(timestep_scale=0.25))).eval()
    plain = UNet(small_config()).eval()
    plain.load_state_dict(scaled.state_dict())
    x, t = inputs()
    with torch.no_grad():
        torch.testing.assert_close(scaled(x, t), plain(x, t.float() * 0.25))


@pytest.mark.parametrize("order", ["legacy", "new"])
def test_attention_matches_explicit_softmax_formula(order):
    generator = torch.Generator().manual_seed(0)
    n, length, heads, d = 2, 5, 3, 4
    qkv = torch.randn(n, length, 3 * heads * d, generator=generator)
    out = multihead_attention(qkv, heads, order)
    # Unpack the channels by hand: legacy = (head, q/k/v, d), new = (q/k/v, head, d).
    for h in range(heads):
        if order == "legacy":
            base = h * 3 * d
            q, k, v = (qkv[..., base + j * d : base + (j + 1) * d] for j in range(3))
        else:
            q, k, v = (
                qkv[..., j * heads * d + h * d : j * heads * d + (h + 1) * d] for j in range(3)
            )
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1)
        torch.testing.assert_close(out[..., h * d : (h + 1) * d], weights @ v)


def attention_and_gradients(function, q, k, v):
    """``function``'s output and the gradients of q, k, v for a fixed linear loss."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = function(*leaves)
    weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)
    (out.double() * weights).sum().backward()
    return [out.double(), *(leaf.grad.double() for leaf in leaves)]


def qkv_heads(tokens: int, dtype=torch.float64, n: int = 2, heads: int = 2, d: int = 8):
    generator = torch.Generator().manual_seed(4)
    return [2 * torch.randn(n, heads, tokens, d, generator=generator, dtype=dtype) for _ in "qkv"]


def test_explicit_attention_is_the_fused_kernels_formula_forward_and_backward():
    q, k, v = qkv_heads(10)
    fused = attention_and_gradients(F.scaled_dot_product_attention, q, k, v)
    explicit = attention_and_gradients(layers.explicit_attention, q, k, v)
    for a, b in zip(explicit, fused, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("tokens", [49, layers.EXPLICIT_MAX_TOKENS + 1])
def test_bf16_training_attention_on_the_cpu_is_explicit_up_to_the_token_limit(tokens, monkeypatch):
    calls = []
    explicit = layers.explicit_attention
    monkeypatch.setattr(layers, "explicit_attention", lambda *a: calls.append(1) or explicit(*a))
    q, k, v = qkv_heads(tokens, d=4)
    reference = attention_and_gradients(F.scaled_dot_product_attention, q, k, v)
    low = attention_and_gradients(layers.attention, *(t.bfloat16() for t in (q, k, v)))
    assert len(calls) == (tokens <= layers.EXPLICIT_MAX_TOKENS)
    for name, a, b in zip(("out", "dq", "dk", "dv"), low, reference, strict=True):
        assert (a - b).norm() / b.norm() < 0.03, name  # bf16 rounding, as the fused kernel's
    float32 = layers.attention(*(t.float() for t in (q, k, v)))
    with torch.no_grad():
        layers.attention(*(t.bfloat16() for t in (q, k, v)))
    assert len(calls) == (tokens <= layers.EXPLICIT_MAX_TOKENS)  # float32, no_grad: fused
    torch.testing.assert_close(float32.double(), reference[0], rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = randomized(UNet(small_config(**FAMILIES["adm"]))).train()
    checkpointed = UNet(small_config(**FAMILIES["adm"], gradient_checkpointing=True)).train()
    checkpointed.load_state_dict(plain.state_dict())
    x, t = inputs()
    for model in (plain, checkpointed):
        model(x, t).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_output_does_not_depend_on_input_memory_format():
    model = randomized(UNet(small_config())).eval()
    x, t = inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, t), model(x.contiguous(memory_format=torch.channels_last), t)
        )


def test_the_network_computes_in_the_layout_of_its_weights():
    model = randomized(UNet(small_config(**FAMILIES["adm"]))).eval()
    layouts = []
    conv = model.encoder.middle.res1.conv1
    conv.register_forward_pre_hook(lambda module, args: layouts.append(args[0].is_contiguous()))
    x, t = inputs()
    with torch.no_grad():
        channels_last = model(x, t)
        nchw = model.to(memory_format=torch.contiguous_format)(x, t)
    assert model.memory_format == torch.contiguous_format
    assert layouts == [False, True]  # channels_last as built; NCHW once moved there
    torch.testing.assert_close(nchw, channels_last, rtol=1e-4, atol=1e-5)


def test_groupnorm_in_low_precision_is_float32_normalisation_rounded():
    generator = torch.Generator().manual_seed(0)
    norm = GroupNorm32(4, 16)
    with torch.no_grad():
        norm.weight.normal_(generator=generator)
        norm.bias.normal_(generator=generator)
    x = (3 * torch.randn(2, 16, 5, 5, generator=generator) + 1).to(torch.bfloat16)
    expected = F.group_norm(x.float(), 4, norm.weight, norm.bias, norm.eps).to(torch.bfloat16)
    with torch.no_grad():
        result = norm(x)
    assert result.dtype == torch.bfloat16
    # One bf16 rounding apart at most: the kernels sum the moments of bf16 and float32
    # inputs in different orders, which depend on the CPU's vector width.
    torch.testing.assert_close(result, expected, rtol=2**-8, atol=0)


def test_bf16_autocast_stays_close_to_float32():
    model = randomized(UNet(small_config(**FAMILIES["adm"])), seed=3).eval()
    x, t = inputs()
    with torch.no_grad():
        reference = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t)
    relative = (low.float() - reference).norm() / reference.norm()
    assert relative < 0.03


def test_traces_as_one_graph_for_torch_compile():
    model = randomized(UNet(small_config(**FAMILIES["adm"], num_classes=3))).train()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x, t = inputs()
    y = torch.tensor([0, 2])
    compiled(x, t, y).square().mean().backward()
    eager = UNet(model.config).train()
    eager.load_state_dict(model.state_dict())
    eager(x, t, y).square().mean().backward()
    for a, b in zip(model.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


def test_config_round_trips_through_json():
    config = small_config(**FAMILIES["adm"], num_classes=5, null_class=True, timestep_scale=0.25)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["kind"] == "unet"
    assert config_from_dict(data) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(attention_resolutions=(4,)), r"\[4\] do not occur.*\[16, 8\]"),
        (dict(image_size=15), "multiple of 2"),
        (dict(model_channels=12), "not divisible by norm_groups"),
        (dict(num_head_channels=5), "heads"),
        (dict(resample="pixelshuffle"), "resample"),
        (dict(null_class=True), "needs num_classes"),
        (dict(dropout=1.0), "dropout"),
        (dict(channel_mult=()), "channel_mult"),
    ],
)
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**overrides)


def test_unknown_or_foreign_settings_are_rejected():
    data = small_config().to_dict()
    with pytest.raises(ConfigError, match="unknown unet settings"):
        config_from_dict({**data, "width": 3})
    with pytest.raises(ConfigError, match="unknown network kind"):
        config_from_dict({**data, "kind": "transformer"})


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_upsampling_then_convolving_is_one_transposed_convolution(memory_format):
    generator = torch.Generator().manual_seed(2)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1).double().to(memory_format=memory_format)
    x = torch.randn(2, 3, 4, 7, generator=generator, dtype=torch.float64)
    x = x.contiguous(memory_format=memory_format).requires_grad_()
    grad_out = torch.randn(2, 5, 8, 14, generator=generator, dtype=torch.float64)
    results = []
    for function in (layers.upsample2x_conv, lambda x, conv: conv(layers.upsample2x(x))):
        y = function(x, conv)
        results.append((y, *torch.autograd.grad(y, (x, conv.weight, conv.bias), grad_out)))
    for name, ours, plain in zip(("y", "x", "weight", "bias"), *results, strict=True):
        torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12, msg=name)
