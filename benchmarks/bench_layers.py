"""Two layers computed with less work than they are written: each against its plain form.

1. **Upsampling then a 3x3 convolution** (``Upsample``; the first convolution of a BigGAN
   up-sampling residual block): ``diffuse.nn.layers.upsample2x_conv``, one transposed
   convolution of stride 2 on the small map (16 multiply-adds per output pixel and channel
   pair), against ``conv(upsample2x(x))`` (36, on the four times larger upsampled map).
2. **GroupNorm with the adaptive scale-shift** on NCHW tensors (the layout bf16 trains
   in where ``precision=auto`` chooses it): ``GroupNorm32.normalize_scaled``, one
   GroupNorm whose weight and bias carry the scale-shift, against GroupNorm and a separate
   ``addcmul``.

Each is timed at the shapes where the ``bench`` and ``fashion`` networks run it (read from
the networks), batch 64, float32 and bf16 autocast, without autograd ("forward") and
forward + backward into the input and the layer's parameters ("training"), with the
relative RMS error of both forms against float64; then each network's whole step with
either form in every layer: float32 as built (channels_last, where the fused GroupNorm
of ``diffuse.nn.group_norm`` serves, so only the upsampling applies) and bf16 in NCHW.
Variants alternate in rounds in one process; ratios are plain / ours (above 1, ours is
faster).

    python benchmarks/bench_layers.py [--batch-size 64] [--rounds 5] [--no-step]
"""

from __future__ import annotations

import copy
from functools import partial

import torch
from torch import nn

import diffuse.nn.layers as layers
from bench_unet import IMPLEMENTATIONS, NETWORKS, make_step
from benchlib import alternating_medians, lever_main, swapped_step_rates, with_replaced
from diffuse.nn import UNet

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16}


def plain_upsample_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Upsampling, then the convolution: the form the papers write."""
    return conv(layers.upsample2x(x))


def plain_normalize_scaled(norm, x, scale, shift) -> torch.Tensor:
    """GroupNorm, then the scale-shift as a step of its own."""
    normed = norm.normalize(x, norm.num_groups, norm.weight, norm.bias)
    return torch.addcmul(shift, normed, 1 + scale)


# lever -> (owner, attribute, {variant: function}, position of the feature map argument)
LEVERS = {
    "upsample+conv": (
        layers,
        "upsample2x_conv",
        {"plain": plain_upsample_conv, "ours": layers.upsample2x_conv},
        0,
    ),
    "GroupNorm+scale-shift": (
        layers.GroupNorm32,
        "normalize_scaled",
        {"plain": plain_normalize_scaled, "ours": layers.GroupNorm32.normalize_scaled},
        1,
    ),
}


def recorded_calls(network: str, lever: str) -> dict[tuple, list]:
    """Feature map shape -> the arguments of one call of ``lever``'s function in
    ``network`` (batch 1, NCHW) with that shape."""
    owner, name, _, position = LEVERS[lever]
    original = getattr(owner, name)
    calls: dict[tuple, list] = {}

    def record(*arguments):
        calls.setdefault(tuple(arguments[position].shape[1:]), list(arguments))
        return original(*arguments)

    config = NETWORKS[network]
    size = config.image_size
    x = torch.zeros(1, config.in_channels, size, size)
    labels = None if config.num_classes is None else torch.zeros(1, dtype=torch.long)
    model = UNet(config).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        with_replaced(owner, name, record, partial(model, x, torch.zeros(1), y=labels))
    return calls


def batched(arguments: list, batch: int, dtype: torch.dtype, generator) -> list:
    """The call's arguments with every tensor drawn afresh at ``batch`` images and in
    ``dtype`` (modules as they are)."""
    return [
        torch.randn(batch, *a.shape[1:], generator=generator).to(dtype)
        if isinstance(a, torch.Tensor)
        else a
        for a in arguments
    ]


def run_layer(
    function, arguments: list, position: int, precision: str, training: bool
) -> list[torch.Tensor]:
    """``function(*arguments)`` under the precision's autocast; with ``training`` the
    backward pass of a fixed weighting of the output into the tensors and the modules'
    parameters too. Returns the output and the gradient of the feature map (the argument
    at ``position``)."""
    dtype = AUTOCAST[precision]
    tensors = [
        a.detach().requires_grad_(training) if isinstance(a, torch.Tensor) else a for a in arguments
    ]
    with (
        torch.set_grad_enabled(training),
        torch.autocast("cpu", dtype=dtype, enabled=dtype is not None),
    ):
        out = function(*tensors)
    if not training:
        return [out]
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).sum().backward()
    for module in (a for a in arguments if isinstance(a, nn.Module)):
        module.zero_grad(set_to_none=True)
    return [out, tensors[position].grad]


def relative_errors(variants: dict, arguments: list, position: int, precision: str) -> str:
    """Each variant's relative RMS error against float64 (output / gradient of the map)."""
    exact = [
        copy.deepcopy(a).double() if isinstance(a, nn.Module) else a.double() for a in arguments
    ]
    reference = run_layer(variants["plain"], exact, position, "fp32", training=True)
    parts = []
    for name, function in variants.items():
        got = run_layer(function, arguments, position, precision, training=True)
        errors = [
            ((g.double() - r).norm() / r.norm()).item() for g, r in zip(got, reference, strict=True)
        ]
        parts.append(f"{name} {errors[0]:.1e}/{errors[1]:.1e}")
    return ", ".join(parts)


def bench_shapes(batch: int, rounds: int) -> None:
    generator = torch.Generator().manual_seed(0)
    for lever, (_, _, variants, position) in LEVERS.items():
        for network in NETWORKS:
            for shape, call in recorded_calls(network, lever).items():
                print(f"{lever}, {network}, input {list(shape)}, batch {batch} (ms; plain / ours)")
                for precision, dtype in AUTOCAST.items():
                    # the feature maps in the precision the network's layers hand them on
                    arguments = batched(call, batch, dtype or torch.float32, generator)
                    timings = []
                    for mode, training in (("forward", False), ("training", True)):
                        run = partial(
                            run_layer,
                            arguments=arguments,
                            position=position,
                            precision=precision,
                            training=training,
                        )
                        medians = alternating_medians(variants, run, rounds)
                        timings.append(
                            f"{mode} {1e3 * medians['plain']:6.2f} / {1e3 * medians['ours']:6.2f} "
                            f"x{medians['plain'] / medians['ours']:.2f}"
                        )
                    errors = relative_errors(variants, arguments, position, precision)
                    print(f"  {precision}: {'   '.join(timings)}   error out/grad: {errors}")


def bench_steps(batch: int, rounds: int) -> None:
    """Each network's whole step with either form of each lever."""
    for network, config in NETWORKS.items():
        for precision, name in (("fp32", "ours"), ("bf16", "ours-nchw")):
            impl = IMPLEMENTATIONS[name]
            torch.manual_seed(0)
            model = impl.build(config)
            for mode in ("forward", "training"):
                step = make_step(impl, model, config, mode, precision, batch)
                for lever, (owner, attribute, variants, _) in LEVERS.items():
                    rates = swapped_step_rates(step, owner, attribute, variants, batch, rounds)
                    print(f"{network} {precision} ({name}) {mode} step, {lever}: {rates}")


if __name__ == "__main__":
    lever_main(__doc__.splitlines()[0], bench_shapes, bench_steps)
