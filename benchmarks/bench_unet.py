"""Speed of our U-Net against diffusers' UNet2DModel built as the same network, in one run.

The network of issue 3: 32x32 RGB, width 64, multipliers (1, 2, 2), two residual blocks
per level, attention at 16x16 with 64 channels per head, adaptive GroupNorm and BigGAN
resampling blocks (ADM style): 7.66 M parameters, 3.59 GFLOP per image forward. For
float32 and bf16 autocast it measures forward (inference) and training-step (forward,
backward, AdamW) throughput in images/s, the achieved GFLOP/s against the machine's
measured matmul peaks, and prints the ratios to diffusers in float32. Variants are timed in
interleaved rounds so that load from other processes falls on all of them alike; the median
round counts. It then measures what bf16 costs numerically: the relative error of the
output against float32, and the diffusion training loss of a short run from the same
initialisation, data and noise.

Needs diffusers (a dev-only tool: ``pip install --no-deps diffusers`` plus its light
dependencies huggingface_hub, regex, requests, importlib_metadata); without it only our
network is measured.

    .venv/bin/python benchmarks/bench_unet.py                 # batch 64, 3 rounds
    .venv/bin/python benchmarks/bench_unet.py --batch-size 16 --rounds 1 --loss-steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffuse.diffusion.config import DiffusionConfig
from diffuse.nn import UNet, UNetConfig
from diffusers_twin import diffusers_twin

CONFIG = UNetConfig(
    image_size=32,
    in_channels=3,
    out_channels=3,
    model_channels=64,
    channel_mult=(1, 2, 2),
    num_res_blocks=2,
    attention_resolutions=(16,),
    num_head_channels=64,
    scale_shift_norm=True,
    resample="resblock",
)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def diffusers_unet(model: UNet) -> torch.nn.Module | None:
    """diffusers' UNet2DModel built as ``model`` with its weights, or None without diffusers."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return None
    return diffusers_twin(model)


def output_of(result) -> torch.Tensor:
    """The tensor a network returned (diffusers wraps it in an output object)."""
    return result.sample if hasattr(result, "sample") else result


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matrix product in ``dtype`` (best of ``repeats``)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = min(time_call(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def forward_gflops(model: torch.nn.Module) -> float:
    """GFLOP of one image's forward pass (matmuls, convolutions, attention), on meta."""
    meta = copy.deepcopy(model).to("meta")
    x = torch.zeros(1, 3, 32, 32, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        meta(x, t)
    return counter.get_total_flops() / 1e9


def time_call(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def autocast(dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=dtype)


def forward_step(model, x, t, dtype) -> Callable[[], None]:
    def run():
        model.eval()
        with torch.inference_mode(), autocast(dtype):
            output_of(model(x, t))

    return run


def training_step(model, x, t, dtype) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    target = torch.randn_like(x)

    def run():
        model.train()
        with autocast(dtype):
            loss = (output_of(model(x, t)).float() - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def throughput(variants: dict[str, Callable[[], None]], batch: int, rounds: int) -> dict:
    """Images/s of each variant: one warm-up call, then the median of interleaved rounds."""
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            times[name].append(time_call(run))
    return {name: batch / statistics.median(values) for name, values in times.items()}


def bf16_hardware() -> str:
    """The CPU's bf16 matrix instructions, from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return "unknown"
    flags = set(cpuinfo.read_text().split())
    found = sorted(flags & {"amx_bf16", "avx512_bf16"})
    return ", ".join(found) if found else "none (no amx_bf16 / avx512_bf16: bf16 is emulated)"


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Redraw the zero-initialised layers so the output is not identically zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model


def bf16_output_error(model: UNet, x: torch.Tensor, t: torch.Tensor) -> tuple[float, float]:
    """Relative RMS and max absolute error of the bf16-autocast output against float32."""
    model.eval()
    with torch.inference_mode():
        reference = model(x, t)
        with autocast(torch.bfloat16):
            low = model(x, t).float()
    return ((low - reference).norm() / reference.norm()).item(), (
        low - reference
    ).abs().max().item()


def smooth_images(n: int, generator: torch.Generator) -> torch.Tensor:
    """Images in [-1, 1] with structure: random 4x4 patterns upsampled bilinearly."""
    coarse = torch.randn(n, 3, 4, 4, generator=generator)
    return torch.tanh(torch.nn.functional.interpolate(coarse, size=32, mode="bilinear"))


def short_training_losses(dtype: torch.dtype | None, steps: int, batch: int) -> list[float]:
    """Diffusion training losses (L_simple) of ``steps`` AdamW steps from a fixed start."""
    torch.manual_seed(0)
    model = UNet(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    process = DiffusionConfig("linear", 1000, "eps", "fixed_small", "mse").build()
    generator = torch.Generator().manual_seed(1)
    data = smooth_images(4 * batch, generator)
    losses = []
    for step in range(steps):
        x0 = data[(step * batch) % len(data) :][:batch]
        t = torch.randint(0, 1000, (batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        with autocast(dtype):
            loss = process.training_losses(model, x0, t, noise=noise)["loss"].float().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant")
    parser.add_argument("--loss-steps", type=int, default=6, help="steps of the bf16 loss run")
    parser.add_argument("--loss-batch", type=int, default=16)
    args = parser.parse_args()

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"bf16 matrix hardware: {bf16_hardware()}")
    peaks = {name: matmul_peak(dtype or torch.float32) for name, dtype in PRECISIONS.items()}
    print("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))

    networks = {"ours": UNet(CONFIG)}
    theirs = diffusers_unet(networks["ours"])
    if theirs is None:
        print("diffusers is not installed: measuring our network only")
    else:
        networks["diffusers"] = theirs
        check = randomized(copy.deepcopy(networks["ours"]), 0).eval()
        with torch.inference_mode():
            x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
            difference = (check(x, t) - diffusers_unet(check)(x, t).sample).abs().max()
        print(f"same network: max |ours - diffusers| = {difference:.1e} with the same weights")
    gflops = {}
    for name, model in networks.items():
        gflops[name] = forward_gflops(model)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:9s} {params:.3f} M parameters, {gflops[name]:.3f} GFLOP per image forward")

    x = torch.randn(args.batch_size, 3, 32, 32)
    t = torch.randint(0, 1000, (args.batch_size,))
    results = {}
    for mode, make, factor in (("forward", forward_step, 1), ("training", training_step, 3)):
        variants = {
            (name, precision): make(model, x, t, dtype)
            for precision, dtype in PRECISIONS.items()
            for name, model in networks.items()
        }
        speeds = throughput(variants, args.batch_size, args.rounds)
        for (name, precision), speed in speeds.items():
            achieved = speed * gflops[name] * factor
            results[mode, name, precision] = speed
            print(
                f"{mode:8s} {name:9s} {precision}: {speed:7.1f} images/s, "
                f"{achieved:6.1f} GFLOP/s = {100 * achieved / peaks[precision]:5.1f}% of the "
                f"{precision} matmul peak"
            )

    if theirs is not None:
        print("ratios (same run):")
        for mode, bf16_target in (("forward", 2.5), ("training", 2.0)):
            base = results[mode, "diffusers", "fp32"]
            fp32 = results[mode, "ours", "fp32"] / base
            bf16 = results[mode, "ours", "bf16"] / base
            print(f"  {mode:8s} ours fp32 / diffusers fp32 = {fp32:.2f}x (target >= 1)")
            print(f"  {mode:8s} ours bf16 / diffusers fp32 = {bf16:.2f}x (target >= {bf16_target})")

    relative, largest = bf16_output_error(randomized(UNet(CONFIG), 0), x[:8], t[:8])
    print(f"bf16 output vs fp32: relative RMS error {relative:.2e}, max abs error {largest:.2e}")
    fp32 = short_training_losses(None, args.loss_steps, args.loss_batch)
    bf16 = short_training_losses(torch.bfloat16, args.loss_steps, args.loss_batch)
    print(f"training loss, {args.loss_steps} steps of batch {args.loss_batch}:")
    print("  fp32: " + " ".join(f"{v:.4f}" for v in fp32))
    print("  bf16: " + " ".join(f"{v:.4f}" for v in bf16))
    worst = max(abs(a - b) / a for a, b in zip(fp32, bf16, strict=True))
    print(f"  largest relative difference per step: {worst:.2e}")


if __name__ == "__main__":
    main()
