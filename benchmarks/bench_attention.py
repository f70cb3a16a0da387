"""Which attention kernel on the CPU: PyTorch's fused one against the three explicit steps.

``diffuse.nn.layers.attention`` trains in bf16 on the CPU with ``explicit_attention``
(scores, softmax, weighted sum) and runs PyTorch's fused ``scaled_dot_product_attention``
everywhere else. This measures that choice:

1. Each attention shape of the ``bench`` and ``fashion`` networks (tokens, heads, channels
   per head, read from the networks' attention layers), batch 64: the fused kernel against
   the explicit steps, without autograd ("forward") and forward + backward ("training"),
   on float32 and on bf16 inputs (what the projections give under bf16 autocast); and the
   bf16 error of each against float64 on the same inputs (the relative RMS error of the
   output and of the gradient of q).
2. Each network's bf16 forward pass and training step (``bench_unet.py``'s, in
   NCHW, the layout ``precision=auto`` chooses for bf16 on a Zen 4 EPYC) with either
   variant as the attention of every layer.

Every comparison runs its variants in alternating rounds in one process and prints the
medians and the ratio fused / explicit (above 1, the explicit steps are faster).

    python benchmarks/bench_attention.py [--batch-size 64] [--rounds 5] [--no-step]
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

import diffuse.nn.layers as layers
from bench_unet import IMPLEMENTATIONS, NETWORKS, make_step
from benchlib import alternating_medians, lever_main, swapped_step_rates
from diffuse.nn import UNet

VARIANTS = {"fused": F.scaled_dot_product_attention, "explicit": layers.explicit_attention}
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def attention_shapes(network: str) -> list[tuple[int, int, int]]:
    """(tokens, heads, channels per head) of every distinct attention layer of ``network``."""
    config = NETWORKS[network]
    model = UNet(config)
    shapes: set[tuple[int, int, int]] = set()

    def record(module, args) -> None:
        _, channels, height, width = args[0].shape
        shapes.add((height * width, module.heads, channels // module.heads))

    hooks = [
        module.register_forward_pre_hook(record)
        for module in model.modules()
        if isinstance(module, layers.SelfAttention)
    ]
    size, channels = config.image_size, config.in_channels
    labels = None if config.num_classes is None else torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        model(torch.zeros(1, channels, size, size), torch.zeros(1, dtype=torch.long), y=labels)
    for hook in hooks:
        hook.remove()
    return sorted(shapes, reverse=True)


def qkv(batch: int, shape: tuple[int, int, int], dtype=torch.float32) -> list[torch.Tensor]:
    """q, k, v [N, heads, L, d] as the U-Net makes them: views into one [N, L, 3, heads, d]."""
    tokens, heads, head_channels = shape
    generator = torch.Generator().manual_seed(0)
    fused = torch.randn(batch, tokens, 3, heads, head_channels, generator=generator, dtype=dtype)
    return [t.transpose(1, 2) for t in fused.unbind(2)]


def run_attention(function, inputs: list[torch.Tensor], weights: torch.Tensor | None):
    """One call of ``function`` on ``inputs``; with loss ``weights``, the backward pass of
    sum(weights * output) too (training). Returns the output and the gradient of q (None
    without training)."""
    training = weights is not None
    leaves = [t.detach().requires_grad_(training) for t in inputs]
    with torch.set_grad_enabled(training):
        out = function(*leaves)
    if not training:
        return out, None
    (out * weights).sum().backward()
    return out, leaves[0].grad


def loss_weights(batch: int, shape: tuple[int, int, int], dtype: torch.dtype) -> torch.Tensor:
    """Fixed weights of the output [N, heads, L, d] that make a scalar to differentiate."""
    tokens, heads, head_channels = shape
    count = batch * heads * tokens * head_channels
    return torch.linspace(-1, 1, count, dtype=dtype).view(batch, heads, tokens, head_channels)


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value = value.to(torch.float64)
    return ((value - reference).norm() / reference.norm()).item()


def bench_shapes(batch: int, rounds: int) -> None:
    for network in NETWORKS:
        for shape in attention_shapes(network):
            tokens, heads, head_channels = shape
            print(
                f"{network}: {tokens} tokens, {heads} heads of {head_channels}, batch {batch} (ms)"
            )
            for precision, dtype in PRECISIONS.items():
                inputs = qkv(batch, shape, dtype)  # as the network's projections make them
                for mode in ("forward", "training"):
                    weights = loss_weights(batch, shape, dtype) if mode == "training" else None
                    run = partial(run_attention, inputs=inputs, weights=weights)
                    medians = alternating_medians(VARIANTS, run, rounds)
                    print(
                        f"  {precision} {mode:8s}: fused {1e3 * medians['fused']:7.2f}  explicit "
                        f"{1e3 * medians['explicit']:7.2f}  fused / explicit "
                        f"x{medians['fused'] / medians['explicit']:.2f}"
                    )
            print_errors(batch, shape)


def print_errors(batch: int, shape: tuple[int, int, int]) -> None:
    """The bf16 error of both variants against float64 (output; gradient of q), on the same
    numbers rounded to bf16."""
    low = qkv(batch, shape, torch.bfloat16)
    exact = [t.double() for t in low]
    reference = run_attention(VARIANTS["fused"], exact, loss_weights(batch, shape, torch.float64))
    weights = loss_weights(batch, shape, torch.bfloat16)
    errors = []
    for name, function in VARIANTS.items():
        got = run_attention(function, low, weights)
        out, grad = (relative_error(g, r) for g, r in zip(got, reference, strict=True))
        errors.append(f"{name} {out:.2e} / {grad:.2e}")
    print("  bf16 relative RMS error of output / grad q: " + ", ".join(errors))


def bench_steps(batch: int, rounds: int) -> None:
    impl = IMPLEMENTATIONS["ours-nchw"]
    for network, config in NETWORKS.items():
        torch.manual_seed(0)
        model = impl.build(config)
        for mode in ("forward", "training"):
            step = make_step(impl, model, config, mode, "bf16", batch)
            # multihead_attention calls layers.attention: each variant in its place
            rates = swapped_step_rates(step, layers, "attention", VARIANTS, batch, rounds)
            print(f"{network} bf16 {mode} step, batch {batch}: {rates}")


if __name__ == "__main__":
    lever_main(__doc__.splitlines()[0], bench_shapes, bench_steps)
