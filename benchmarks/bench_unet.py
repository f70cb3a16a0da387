"""Speed and memory of our U-Net against its peers, each built natively by its own library.

Two networks (``--networks``): ``bench``, the network of issue 3: 32x32 RGB, width 64,
multipliers (1, 2, 2), two residual blocks per level, attention at 16x16 with 64 channels
per head, adaptive GroupNorm and BigGAN resampling blocks (ADM style): 7.66 M parameters,
3.59 GFLOP per image forward; and ``fashion``, the ``fashion`` preset's: 28x28 grey, width
32, multipliers (1, 2, 4), attention at 14x14 and 7x7 with 32 channels per head, 16
GroupNorm groups, adaptive GroupNorm, convolutional resampling, dropout 0.1, 10 classes
and a null class: 3.87 M parameters, 0.87 GFLOP per image (ours computes 3.38 and 0.80:
its upsampling convolutions run as transposed convolutions, ``upsample2x_conv``). Peers,
each built, fed (class labels by its own keyword) and trained as its own users do:

- diffusers: ``UNet2DModel`` with the same architecture (``diffusers_twin.py``) and
  diffusers' own initialisation; AdamW as its ``train_unconditional.py`` example
  (betas 0.95/0.999, weight decay 1e-6); ``no_grad`` as its pipelines.
- guided-diffusion: its ``UNetModel`` with the same settings (``use_fp16=False``; made
  directly, as its ``create_model`` fixes three input channels), from the checkout named
  by ``$GUIDED_DIFFUSION`` (skipped when unset; fetched for measuring, never part of this
  repository); AdamW as its TrainLoop; ``no_grad`` as its samplers. The same network as
  ours, parameter for parameter (its GroupNorms have 32 groups, hard-coded: on the
  ``fashion`` network 32 instead of 16, the same parameters and FLOPs). Its
  attention blocks always use its own gradient checkpointing (hard-coded), which
  recomputes them in the backward pass outside autocast: its bf16 training fails
  (reported as such).
- denoising-diffusion-pytorch (``bench`` network only: it has no class conditioning):
  ``Unet(dim=64, dim_mults=(1, 2, 2))``, a lighter network of the same layout (linear attention at every level, full attention in the middle);
  Adam (betas 0.9/0.99) as its Trainer; ``inference_mode`` as its sampler. Read its
  ratio per GFLOP too. Installed with ``pip install --no-deps denoising_diffusion_pytorch
  einops ema-pytorch``; torchvision and accelerate, which its package imports for its
  Trainer only, are stood in for by empty modules when they are not installed.

bf16 is autocast for every implementation (what accelerate's ``mixed_precision="bf16"``
does for the peers' training scripts); float32 and bf16 are compared at equal precision.
Ours is measured in bf16 twice: as built (channels_last) and as ``ours-nchw``, its
weights and so its activations in NCHW, the other layout ``precision=auto`` times for bf16
and runs in where it is faster (on a Zen 4 EPYC with AVX512-BF16 it is: 1.49x in training
on the ``fashion`` network, 1.30x on the ``bench`` network, 2026-12-04).

Ours runs as the ``diffuse`` command runs it, with freed memory kept in the process
(``diffuse.allocator``); the peers with glibc's defaults, as their scripts leave them.
Two diagnosis rows (``--peers ...,ours-returning,diffusers-keeping``) show what that is
worth: ours with glibc's defaults, and diffusers given the same setting, which then
counts as a peer. A third (``ours-pytorch-gn``) runs ours with the fused GroupNorm's
float32 passes in PyTorch operations instead of diffuse's C kernels (``diffuse.nn.native``).

Every measurement - one (implementation, network, precision, mode) - runs in its own
fresh process (``bench_unet.py measure ...``, answering one JSON line): it builds the
network, takes ``--warmup`` steps, then times ``--iterations`` steps, and reports images/s
(median step), peak resident memory and page faults per step. Rounds repeat the set with the
implementations in rotated order, so that drift of a shared machine hits all alike; the
median round counts. Ratios are ours against the fastest peer at equal precision and
mode, in images/s and in achieved GFLOP/s (per GFLOP: fair to a lighter network). Each table
ends with its ceiling: the ratio to the best peer of the same FLOP run at the matmul peak
(a large square matrix product, timed in the same run). Where the ceiling is below a
target, no implementation of the same arithmetic reaches that target on this CPU: only
fewer operations (another convolution algorithm) or faster kernels than the matmul's
could.

What handicapped diffusers in the earlier version of this benchmark (issue 12: on a 2-core
Zen 4 it printed 4.2 training images/s for diffusers and 9.9 for ours, where each built
and run alone gives 14.9 and 14.4): it ran every variant - both networks, float32 and
bf16 autocast, forward and training - interleaved in ONE process, the float32 and bf16
variants training the same network with two optimizers, and diffusers' network carried
our weights (its twin) instead of its own initialisation. ``--one-process --warmup 1
--peers diffusers-twin`` reproduces that scheme. Measured on a 2-core EPYC without
AVX-512 (bf16 emulated, so fp32 only; 23 GiB memory; a loaded shared machine, so ratios
within one run only), excluded:

- interleaving fp32 variants in one process: ours / diffusers' twin in training 1.06x in
  one process against 1.16x in fresh processes at batch 64 (1.03x against 1.11x at 16):
  no handicap for diffusers, if anything the reverse;
- our weights in diffusers' network: no denormal number in any activation or gradient
  over 6 training steps (counted with hooks, batch 8), and the same speed as diffusers'
  own initialisation within the noise;
- the optimizer: every library's training script uses torch's AdamW / Adam, which on a
  CPU all run the same single-tensor kernels; memory format: each library its own
  (ours converts to channels_last inside, the peers stay NCHW), as their users run them.

What does show at small size is the warm-up: a fresh network's first training steps map
their memory (page faults per step at batch 8: 83, 46, 8 thousand, then 0-4 thousand from
the fourth step; at batch 2, timed after one warm-up step 1.5-2.5 s per step, after three
0.35-0.40 s), and diffusers' settle later than ours (batch 16, after two warm-up steps: 17-21 thousand faults per step
against 4 thousand). The earlier scheme timed after one warm-up step, inside that
transient; each measurement now takes ``--warmup`` 3 steps first.

What one process does change is memory: its peak is that of everything alive together,
3.7 GB at batch 64 for ours and the twin in fp32 alone (3.0 and 3.4 GB each in a fresh
process), before the bf16 variants, their weight casts and two more optimizer states. On
a 2-vCPU cloud machine (often 4-8 GiB) that is enough for the kernel to evict code and
file pages, which come back as major page faults - on whichever variant runs when memory
is fullest. This could not be verified here (no memory pressure, no bf16 hardware); the
report's "major" column shows it where it happens. Also measured: at batch 64 every step
maps 1.2-1.6 GB of fresh pages (300-400 thousand minor faults: freed large tensors go
back to the kernel), ours and diffusers' alike; diffusers' forward pass 2.6x as many as
ours.

Memory against the peers (issue 12, goal 5): each (implementation, mode) prints its peak
RSS and step RSS, then ours against the peer with the lowest. In training our network keeps
more for the backward pass than guided-diffusion's, and only in the attention blocks:
counted with saved-tensor hooks at batch 16, ours saves 484 MiB, guided-diffusion's 420,
diffusers' 511; the 64 MiB difference is our six attention blocks (their GroupNorm input,
the token and q/k/v activations the backward pass needs: 42 + 10 + 12 MiB), which
guided-diffusion does not keep because its attention blocks always recompute themselves in
the backward pass (gradient checkpointing hard-coded in its ``AttentionBlock``), at the
price of a second attention forward per step. Everything else (residual blocks,
convolutions, GroupNorms) saves the same bytes in both. Measured peak RSS, training fp32,
batch 16, fresh processes: ours 1081 MiB (806 over the steps), guided-diffusion 1021 (761),
diffusers 1229 (808): 1.06x guided-diffusion's. ``--with-checkpointing`` adds ours with
``gradient_checkpointing`` (every block recomputed): 716 MiB (447), 0.70x
guided-diffusion's, for about a sixth fewer images/s (measured on a loaded machine).

    .venv/bin/python benchmarks/bench_unet.py                        # batch 64, 3 rounds
    .venv/bin/python benchmarks/bench_unet.py --networks fashion --precisions fp32
    GUIDED_DIFFUSION=/path/to/guided-diffusion .venv/bin/python benchmarks/bench_unet.py
    .venv/bin/python benchmarks/bench_unet.py --batch-size 2 --rounds 1 --iterations 1
    .venv/bin/python benchmarks/bench_unet.py --one-process --warmup 1  # the old way
    .venv/bin/python benchmarks/bench_unet.py --check                # outputs agree; bf16 error
    .venv/bin/python benchmarks/bench_unet.py --with-checkpointing --modes training
    python3 benchmarks/bench_unet.py --device cuda --iterations 20 --warmup 10  # a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchlib import (
    describe_machine,
    emit,
    page_faults,
    peak_rss_mib,
    rotated,
    run_fresh,
    time_call,
)
from diffuse import presets
from diffuse.allocator import keep_freed_memory
from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.nn import UNet, UNetConfig
from diffuse.nn.native import OPT_OUT as NATIVE_OPT_OUT
from diffuse.train import TrainConfig
from diffuse.train.optim import build_optimizer
from diffusers_twin import diffusers_twin, unet2d_arguments

SCRIPT = Path(__file__).resolve()
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
# The networks measured: issue 3's 32x32 ADM network, and the `fashion` preset's
# (28x28 grey, class-conditional with a null class, dropout 0.1, convolutional resampling).
NETWORKS = {"bench": CONFIG, "fashion": presets.get("fashion").model_config}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
MODES = {"forward": 1, "training": 3}  # FLOP of a mode's step, in forward passes


# ---------------------------------------------------------------- implementations


@dataclass(frozen=True)
class Implementation:
    """A U-Net as its own library's users build, feed and train it.

    build:         the network of one of our configurations, with its library's own
                   initialisation.
    optimizer:     the optimizer its training script makes for the network.
    no_grad:       how its sampler turns autograd off.
    channels_last: whether its training code passes channels_last batches.
    labels:        the keyword its network takes class labels by.
    missing:       why it cannot be measured here, or None.
    unsupported:   why it cannot build a given configuration, or None.
    precisions:    the precisions it is measured in.
    keeps_memory:  whether its process keeps freed memory for reuse, as the ``diffuse``
                   command does at start-up (:func:`diffuse.allocator.keep_freed_memory`);
                   the peers' own scripts leave glibc's malloc as it is.
    native:        whether diffuse's C kernels may run (the fused GroupNorm's float32
                   passes, :mod:`diffuse.nn.native`); False measures ours without them.
    """

    build: Callable[[UNetConfig], nn.Module]
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    no_grad: Callable[[], contextlib.AbstractContextManager]
    channels_last: bool
    labels: str
    missing: Callable[[], str | None]
    unsupported: Callable[[UNetConfig], str | None] = lambda config: None
    precisions: tuple[str, ...] = tuple(PRECISIONS)
    keeps_memory: bool = False
    native: bool = True


def not_installed(*modules: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        return f"not installed: {', '.join(absent)}" if absent else None

    return missing


def build_diffusers(config: UNetConfig) -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(**unet2d_arguments(UNet(config)))


def guided_diffusion_missing() -> str | None:
    root = os.environ.get("GUIDED_DIFFUSION")
    if not root:
        return "set GUIDED_DIFFUSION to a checkout of github.com/openai/guided-diffusion"
    if not (Path(root) / "guided_diffusion" / "unet.py").is_file():
        return f"GUIDED_DIFFUSION={root} holds no guided_diffusion/unet.py"
    return None


def build_guided_diffusion(config: UNetConfig) -> nn.Module:
    """guided-diffusion's ``UNetModel`` with ``config``'s architecture (its ``create_model``
    fixes three input channels, so the model is made directly). Its GroupNorms always have
    32 groups (hard-coded): for the ``fashion`` network (16) the same parameters and FLOPs."""
    sys.path.insert(0, os.environ["GUIDED_DIFFUSION"])
    from guided_diffusion.unet import UNetModel  # imports no MPI

    classes = config.num_classes
    return UNetModel(
        image_size=config.image_size,
        in_channels=config.in_channels,
        model_channels=config.model_channels,
        out_channels=config.out_channels,
        num_res_blocks=config.num_res_blocks,
        attention_resolutions=tuple(config.image_size // r for r in config.attention_resolutions),
        dropout=config.dropout,
        channel_mult=config.channel_mult,
        num_classes=None if classes is None else classes + int(config.null_class),
        num_heads=config.num_heads,
        num_head_channels=config.num_head_channels or -1,
        use_scale_shift_norm=config.scale_shift_norm,
        resblock_updown=config.resample == "resblock",
        use_new_attention_order=config.attention_order == "new",
    )


def build_denoising_diffusion_pytorch(config: UNetConfig) -> nn.Module:
    for name in ("torchvision", "accelerate"):  # imported by its package for its Trainer
        if importlib.util.find_spec(name) is None:
            stand_in = types.ModuleType(name)
            stand_in.__getattr__ = lambda attribute: None
            sys.modules[name] = stand_in
    from denoising_diffusion_pytorch import Unet

    return Unet(dim=64, dim_mults=(1, 2, 2))


def only_the_bench_network(config: UNetConfig) -> str | None:
    """denoising-diffusion-pytorch's ``Unet`` has no class conditioning and its own layout:
    it stands in (lighter) for the bench network only."""
    return None if config == CONFIG else "its Unet is measured on the bench network only"


def diffusers_adamw(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW as diffusers' ``train_unconditional.py`` example makes it."""
    return torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8
    )


IMPLEMENTATIONS = {
    "ours": Implementation(
        build=UNet,
        optimizer=lambda model: build_optimizer(model, TrainConfig()),
        no_grad=torch.inference_mode,
        channels_last=True,
        labels="y",
        missing=lambda: None,
        keeps_memory=True,
    ),
    # ours trading compute for memory (--with-checkpointing): every block recomputed in
    # the backward pass (UNetConfig.gradient_checkpointing)
    "ours-checkpointed": Implementation(
        build=lambda config: UNet(replace(config, gradient_checkpointing=True)),
        optimizer=lambda model: build_optimizer(model, TrainConfig()),
        no_grad=torch.inference_mode,
        channels_last=True,
        labels="y",
        missing=lambda: None,
        keeps_memory=True,
    ),
    # ours in bf16 in NCHW (weights, and so activations): the layout precision=auto also
    # times for bf16, and trains and samples in where it is faster
    "ours-nchw": Implementation(
        build=lambda config: UNet(config).to(memory_format=torch.contiguous_format),
        optimizer=lambda model: build_optimizer(model, TrainConfig()),
        no_grad=torch.inference_mode,
        channels_last=False,
        labels="y",
        missing=lambda: None,
        precisions=("bf16",),
        keeps_memory=True,
    ),
    "diffusers": Implementation(
        build=build_diffusers,
        optimizer=diffusers_adamw,
        no_grad=torch.no_grad,
        channels_last=False,
        labels="class_labels",
        missing=not_installed("diffusers"),
    ),
    # diagnosis only (--peers diffusers-twin): diffusers' network carrying our weights
    "diffusers-twin": Implementation(
        build=lambda config: diffusers_twin(UNet(config)),
        optimizer=diffusers_adamw,
        no_grad=torch.no_grad,
        channels_last=False,
        labels="class_labels",
        missing=not_installed("diffusers"),
    ),
    "guided-diffusion": Implementation(
        build=build_guided_diffusion,
        optimizer=lambda model: torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0),
        no_grad=torch.no_grad,
        channels_last=False,
        labels="y",
        missing=guided_diffusion_missing,
    ),
    "denoising-diffusion-pytorch": Implementation(
        build=build_denoising_diffusion_pytorch,
        optimizer=lambda model: torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99)),
        no_grad=torch.inference_mode,
        channels_last=False,
        labels="y",
        missing=not_installed("denoising_diffusion_pytorch", "einops", "ema_pytorch"),
        unsupported=only_the_bench_network,
    ),
}
# ours and the variants its own options add (not --peers)
OUR_VARIANTS = ("ours", "ours-nchw", "ours-checkpointed")
# diagnosis only (--peers ours-returning,diffusers-keeping): what keeping freed memory is
# worth, to ours without it and to a peer with it
IMPLEMENTATIONS["ours-returning"] = replace(IMPLEMENTATIONS["ours"], keeps_memory=False)
IMPLEMENTATIONS["diffusers-keeping"] = replace(IMPLEMENTATIONS["diffusers"], keeps_memory=True)
# diagnosis only (--peers ours-pytorch-gn): ours with the fused GroupNorm's float32 passes
# in PyTorch operations instead of the C kernels
IMPLEMENTATIONS["ours-pytorch-gn"] = replace(IMPLEMENTATIONS["ours"], native=False)


# ---------------------------------------------------------------- steps


def output_of(result) -> torch.Tensor:
    """The tensor a network returned (diffusers wraps it in an output object)."""
    return result.sample if hasattr(result, "sample") else result


def autocast(dtype: torch.dtype | None, device: str = "cpu"):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def synchronized(step: Callable[[], None], device: str) -> Callable[[], None]:
    """``step``, returning only once a GPU has finished its work (so that a host clock
    around it times the work, not its queueing)."""
    if torch.device(device).type != "cuda":
        return step

    def step_and_wait() -> None:
        step()
        torch.cuda.synchronize(device)

    return step_and_wait


def inputs(
    impl: Implementation, config: UNetConfig, batch: int, mode: str, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """A batch x_t, its timesteps and its class labels (as the keyword the implementation's
    network takes, none for an unconditional one) on ``device``, x_t in the memory format
    the implementation's code uses."""
    generator = torch.Generator().manual_seed(0)
    size = config.image_size
    x = torch.randn(batch, config.in_channels, size, size, generator=generator).to(device)
    if impl.channels_last and mode == "training":
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch,), generator=generator).to(device)
    if config.num_classes is None:
        return x, t, {}
    labels = torch.randint(0, config.num_classes, (batch,), generator=generator)
    return x, t, {impl.labels: labels.to(device)}


def make_step(
    impl: Implementation,
    model: nn.Module,
    config: UNetConfig,
    mode: str,
    precision: str,
    batch: int,
    device: str = "cpu",
):
    """One step of ``mode`` on ``device`` (where ``model`` is): a forward pass without
    autograd, or a training step (forward, mean squared error to a noise target, backward,
    the optimizer's step)."""
    x, t, labels = inputs(impl, config, batch, mode, device)
    dtype = PRECISIONS[precision]
    if mode == "forward":

        def forward() -> None:
            model.eval()
            with impl.no_grad(), autocast(dtype, device):
                output_of(model(x, t, **labels))

        return synchronized(forward, device)
    optimizer = impl.optimizer(model)
    target = torch.randn_like(x)

    def training() -> None:
        model.train()
        with autocast(dtype, device):
            output = output_of(model(x, t, **labels))
        loss = (output.float() - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return synchronized(training, device)


def peak_memory_mib(device: str) -> float:
    """Peak resident memory of this process, or on a GPU the peak of torch's allocations."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()


def measure(
    name: str,
    network: str,
    precision: str,
    mode: str,
    batch: int,
    warmup: int,
    iterations: int,
    device: str = "cpu",
):
    """Images/s, memory and page faults of one (implementation, network, precision, mode)
    on ``device`` in this process, which should be a fresh one."""
    impl, config = IMPLEMENTATIONS[name], NETWORKS[network]
    if impl.keeps_memory:
        keep_freed_memory()
    if not impl.native:
        os.environ[NATIVE_OPT_OUT] = "0"
    torch.manual_seed(0)
    model = impl.build(config).to(device)
    rss_built = peak_memory_mib(device)
    step = make_step(impl, model, config, mode, precision, batch, device)
    for _ in range(warmup):
        step()
    minor, major = page_faults()
    seconds = [time_call(step) for _ in range(iterations)]
    minor_after, major_after = page_faults()
    return {
        "images_per_s": batch / statistics.median(seconds),
        "seconds": seconds,
        "faults_per_step": (minor_after - minor) / iterations,
        "major_faults_per_step": (major_after - major) / iterations,
        "peak_rss_mib": peak_memory_mib(device),
        "step_rss_mib": peak_memory_mib(device) - rss_built,
    }


def measure_in_one_process(names, network, precisions, modes, batch, warmup, rounds) -> dict:
    """The earlier benchmark's scheme, for comparison: one network per implementation,
    shared by its float32 and bf16 variants; per mode, every variant warmed up and then
    timed in interleaved rounds, all in this one process."""
    config = NETWORKS[network]
    models = {name: IMPLEMENTATIONS[name].build(config) for name in names}
    results = {}
    for mode in modes:
        steps = {
            (name, precision): make_step(
                IMPLEMENTATIONS[name], models[name], config, mode, precision, batch
            )
            for precision in precisions
            for name in names
        }
        for step in steps.values():
            for _ in range(warmup):
                step()
        times = {key: [] for key in steps}
        faults = {key: [0, 0] for key in steps}
        for _ in range(rounds):
            for key, step in steps.items():
                before = page_faults()
                times[key].append(time_call(step))
                for i, (now, then) in enumerate(zip(page_faults(), before, strict=True)):
                    faults[key][i] += now - then
        for (name, precision), values in times.items():
            minor, major = faults[name, precision]
            results[f"{name}|{precision}|{mode}"] = {
                "images_per_s": batch / statistics.median(values),
                "faults_per_step": minor / rounds,
                "major_faults_per_step": major / rounds,
                "peak_rss_mib": peak_rss_mib(),
            }
    return results


def describe(name: str, network: str) -> dict:
    """Parameters (millions) and forward GFLOP per image of an implementation's network,
    counted on the meta device, where attention decomposes into countable matrix products
    (the CPU's fused attention kernel has no FLOP formula)."""
    impl, config = IMPLEMENTATIONS[name], NETWORKS[network]
    model = impl.build(config).eval()
    params = sum(p.numel() for p in model.parameters())
    x, t, labels = inputs(impl, config, 1, "forward")
    meta = {key: value.to("meta") for key, value in labels.items()}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output_of(model.to("meta")(x.to("meta"), t.to("meta"), **meta))
    return {"params_m": params / 1e6, "gflop": counter.get_total_flops() / 1e9}


def matmul_peaks(device: str = "cpu", budget: float = 1.0) -> dict:
    """GFLOP/s of an n x n matrix product in each precision on ``device`` (n = 1024 on a
    CPU, 8192 on a GPU): the best of the calls made within ``budget`` seconds (at least
    two; emulated bf16 is slow)."""
    n = 1024 if torch.device(device).type == "cpu" else 8192
    peaks = {}
    for precision, dtype in PRECISIONS.items():
        a = torch.randn(n, n).to(device, dtype or torch.float32)
        b = torch.randn(n, n).to(device, dtype or torch.float32)
        product = synchronized(lambda a=a, b=b: a @ b, device)
        times = [time_call(product)]
        while len(times) < 2 or sum(times) < budget:
            times.append(time_call(product))
        peaks[precision] = 2 * n**3 / min(times[1:]) / 1e9
    return peaks


# ---------------------------------------------------------------- numerical checks


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """Redraw the zero-initialised layers so the output is not identically zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model


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


def checks(loss_steps: int, loss_batch: int) -> dict:
    """Our network against diffusers' with the same weights; what bf16 costs numerically."""
    torch.manual_seed(0)
    ours = randomized(UNet(CONFIG), 0).eval()
    x, t = torch.randn(8, 3, 32, 32), torch.randint(0, 1000, (8,))
    result = {}
    with torch.inference_mode():
        reference = ours(x, t)
        if IMPLEMENTATIONS["diffusers"].missing() is None:
            twin = diffusers_twin(ours)
            result["twin_max_abs_difference"] = (twin(x, t).sample - reference).abs().max().item()
        with autocast(torch.bfloat16):
            low = ours(x, t).float()
    result["bf16_relative_rms_error"] = ((low - reference).norm() / reference.norm()).item()
    result["bf16_max_abs_error"] = (low - reference).abs().max().item()
    result["fp32_losses"] = short_training_losses(None, loss_steps, loss_batch)
    result["bf16_losses"] = short_training_losses(torch.bfloat16, loss_steps, loss_batch)
    return result


def print_checks(result: dict, loss_steps: int, loss_batch: int) -> None:
    if "twin_max_abs_difference" in result:
        print(
            "same network: max |ours - diffusers| = "
            f"{result['twin_max_abs_difference']:.1e} with the same weights"
        )
    print(
        f"bf16 output vs fp32: relative RMS error {result['bf16_relative_rms_error']:.2e}, "
        f"max abs error {result['bf16_max_abs_error']:.2e}"
    )
    fp32, bf16 = result["fp32_losses"], result["bf16_losses"]
    print(f"training loss, {loss_steps} steps of batch {loss_batch}:")
    print("  fp32: " + " ".join(f"{v:.4f}" for v in fp32))
    print("  bf16: " + " ".join(f"{v:.4f}" for v in bf16))
    worst = max(abs(a - b) / a for a, b in zip(fp32, bf16, strict=True))
    print(f"  largest relative difference per step: {worst:.2e}")


# ---------------------------------------------------------------- the report


def report(network: str, results: dict, described: dict, peaks: dict, modes, precisions) -> None:
    """For one network, a table per (mode, precision), then ours against the fastest peer."""
    for mode in modes:
        for precision in precisions:
            rows = {
                name: runs
                for (net, name, p, m), runs in results.items()
                if (net, p, m) == (network, precision, mode)
            }
            print(f"\n{network} network, {mode} {precision}")
            print(
                f"  {'implementation':28s} {'params':>7s} {'GFLOP':>6s} {'images/s':>9s} "
                f"{'GFLOP/s':>8s} {'%peak':>6s} {'peak RSS':>9s} {'step RSS':>9s} {'faults':>8s} "
                f"{'major':>6s}"
            )
            speed, achieved = {}, {}
            for name, runs in rows.items():
                failed = [r["error"] for r in runs if "error" in r]
                if failed:
                    print(f"  {name:28s} failed: {failed[0]}")
                    continue
                speed[name] = statistics.median(r["images_per_s"] for r in runs)
                size = described[network, name]
                achieved[name] = speed[name] * size["gflop"] * MODES[mode]
                growth = [r["step_rss_mib"] for r in runs if "step_rss_mib" in r]
                step_rss = f"{max(growth):7.0f}Mi" if growth else f"{'-':>9s}"
                print(
                    f"  {name:28s} {size['params_m']:6.2f}M "
                    f"{size['gflop']:6.2f} {speed[name]:9.1f} {achieved[name]:8.1f} "
                    f"{100 * achieved[name] / peaks[precision]:5.1f}% "
                    f"{max(r['peak_rss_mib'] for r in runs):7.0f}Mi "
                    f"{step_rss} "
                    f"{statistics.median(r['faults_per_step'] for r in runs):8.0f} "
                    f"{statistics.median(r['major_faults_per_step'] for r in runs):6.0f}"
                )
            peers = [name for name in speed if not name.startswith("ours")]
            ours = [name for name in speed if name.startswith("ours")]
            if ours and peers:
                fastest = max(peers, key=speed.__getitem__)
                densest = max(peers, key=achieved.__getitem__)
                for name in ours:
                    print(
                        f"  {name} / fastest peer ({fastest}): "
                        f"{speed[name] / speed[fastest]:.2f}x images/s; per GFLOP, {name} / "
                        f"best peer ({densest}): {achieved[name] / achieved[densest]:.2f}x"
                    )
                print(
                    f"  ceiling: the same FLOP at the {precision} matmul peak would be "
                    f"{peaks[precision] / achieved[densest]:.2f}x the best peer"
                )
                print_memory_ratios(rows, ours, peers)


def print_memory_ratios(rows: dict, ours: list[str], peers: list[str]) -> None:
    """Each of our variants' peak RSS (and its growth over the steps, where measured)
    against the peer with the lowest, at the same batch: issue 12 asks for ours at most
    theirs."""
    names = [*ours, *peers]
    peak = {name: max(r["peak_rss_mib"] for r in rows[name] if "error" not in r) for name in names}
    growth = {
        name: max(r["step_rss_mib"] for r in rows[name] if "step_rss_mib" in r)
        for name in names
        if any("step_rss_mib" in r for r in rows[name])
    }
    lowest = min(peers, key=peak.__getitem__)
    leanest = min((name for name in peers if name in growth), key=growth.__getitem__, default=None)
    for name in ours:
        line = f"  {name} / lowest peer, peak RSS ({lowest}): {peak[name] / peak[lowest]:.2f}x"
        if leanest is not None and name in growth:
            line += f"; step RSS ({leanest}): {growth[name] / growth[leanest]:.2f}x"
        print(line)


def main_measure(argv: list[str]) -> None:
    """``bench_unet.py measure|one-process|describe|peaks|checks ...``: the work of one
    fresh process; prints one JSON line."""
    parser = argparse.ArgumentParser(prog="bench_unet.py (measuring process)")
    parser.add_argument("task", choices=("measure", "one-process", "describe", "peaks", "checks"))
    parser.add_argument("--names", default="ours")
    parser.add_argument("--network", default="bench", choices=sorted(NETWORKS))
    parser.add_argument("--precisions", default="fp32")
    parser.add_argument("--modes", default="forward")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loss-steps", type=int, default=6)
    parser.add_argument("--loss-batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    names, precisions, modes = (s.split(",") for s in (args.names, args.precisions, args.modes))
    if args.task == "measure":
        emit(
            measure(
                names[0],
                args.network,
                precisions[0],
                modes[0],
                args.batch_size,
                args.warmup,
                args.iterations,
                args.device,
            )
        )
    elif args.task == "one-process":
        emit(
            measure_in_one_process(
                names, args.network, precisions, modes, args.batch_size, args.warmup, args.rounds
            )
        )
    elif args.task == "describe":
        emit(describe(names[0], args.network))
    elif args.task == "peaks":
        emit(matmul_peaks(args.device))
    else:
        emit(checks(args.loss_steps, args.loss_batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all measurements")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per measurement")
    parser.add_argument("--iterations", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated")
    parser.add_argument("--modes", default="forward,training", help="comma-separated")
    parser.add_argument(
        "--networks",
        default="bench,fashion",
        help="comma-separated: 'bench' (issue 3's 32x32 ADM network), 'fashion' (the preset's)",
    )
    parser.add_argument(
        "--peers",
        default="diffusers,guided-diffusion,denoising-diffusion-pytorch",
        help="comma-separated, of "
        + ", ".join(name for name in IMPLEMENTATIONS if name not in OUR_VARIANTS),
    )
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="measure the earlier way: every variant interleaved in one process",
    )
    parser.add_argument(
        "--with-checkpointing",
        action="store_true",
        help="also ours with gradient checkpointing (memory for compute)",
    )
    parser.add_argument("--check", action="store_true", help="also the numerical checks")
    parser.add_argument("--loss-steps", type=int, default=6, help="steps of the bf16 loss run")
    parser.add_argument("--loss-batch", type=int, default=16)
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda: a GPU (peak memory is then torch's peak allocation on it)",
    )
    args = parser.parse_args()
    networks = args.networks.split(",")
    precisions, modes = args.precisions.split(","), args.modes.split(",")
    for option, given, known in (
        ("networks", networks, NETWORKS),
        ("precisions", precisions, PRECISIONS),
        ("modes", modes, MODES),
    ):
        if set(given) - set(known):
            parser.error(
                f"unknown {option} {sorted(set(given) - set(known))}; known: {', '.join(known)}"
            )

    if args.one_process and args.device != "cpu":
        parser.error("--one-process measures on the CPU only")
    print(describe_machine())
    available = ["ours", "ours-nchw"]
    available += ["ours-checkpointed"] if args.with_checkpointing else []
    for name in args.peers.split(","):
        if name in available:  # ours and its variants are measured already
            continue
        why = IMPLEMENTATIONS[name].missing()
        if why is None:
            available.append(name)
        else:
            print(f"skipping {name}: {why}")
    names = {}
    for network in networks:
        names[network] = []
        for name in available:
            why = IMPLEMENTATIONS[name].unsupported(NETWORKS[network])
            if why is None:
                names[network].append(name)
            else:
                print(f"skipping {name} on the {network} network: {why}")
    described = {
        (network, name): run_fresh(SCRIPT, ["describe", "--names", name, "--network", network])
        for network in networks
        for name in names[network]
    }
    if torch.device(args.device).type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(args.device)}")
    peaks = run_fresh(SCRIPT, ["peaks", "--device", args.device])
    print("matmul peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))
    common = ["--batch-size", str(args.batch_size), "--warmup", str(args.warmup)]
    common += ["--device", args.device]
    results: dict[tuple[str, str, str, str], list[dict]] = {}
    if args.one_process:
        print(f"batch {args.batch_size}, all variants in ONE process, {args.rounds} rounds")
        for network in networks:
            answer = run_fresh(
                SCRIPT,
                [
                    "one-process", "--names", ",".join(names[network]), "--network", network,
                    "--precisions", args.precisions, "--modes", args.modes,
                    "--rounds", str(args.rounds), *common,
                ],
            )  # fmt: skip
            for key, value in answer.items():
                results[(network, *key.split("|"))] = [value]
    else:
        print(
            f"batch {args.batch_size}, each measurement a fresh process ({args.warmup} "
            f"warm-up + {args.iterations} timed steps), {args.rounds} rounds"
        )
        for r in range(args.rounds):
            for network in networks:
                for mode in modes:
                    for precision in precisions:
                        for name in rotated(names[network], r):
                            if precision not in IMPLEMENTATIONS[name].precisions:
                                continue
                            argv = [
                                "measure", "--names", name, "--network", network,
                                "--precisions", precision, "--modes", mode,
                                "--iterations", str(args.iterations), *common,
                            ]  # fmt: skip
                            try:
                                answer = run_fresh(SCRIPT, argv)
                            except RuntimeError as error:
                                answer = {"error": str(error).strip().splitlines()[-1]}
                            results.setdefault((network, name, precision, mode), []).append(answer)
                            print(
                                f"  round {r + 1}: {name} {network} {mode} {precision}: "
                                + (
                                    answer["error"]
                                    if "error" in answer
                                    else f"{answer['images_per_s']:.1f} images/s"
                                ),
                                flush=True,
                            )
    print(
        "\npeak RSS: the measuring process's peak resident memory (imports included); step "
        "RSS: its growth\nover the steps, after the network was built; faults, major: minor "
        "and major page faults per timed step"
    )
    if args.device != "cpu":
        print(f"on {args.device}, peak and step RSS are torch's peak allocations on the device")
    for network in networks:
        report(network, results, described, peaks, modes, precisions)
    if args.check:
        checked = run_fresh(
            SCRIPT,
            ["checks", "--loss-steps", str(args.loss_steps), "--loss-batch", str(args.loss_batch)],
        )
        print()
        print_checks(checked, args.loss_steps, args.loss_batch)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in (
        "measure",
        "one-process",
        "describe",
        "peaks",
        "checks",
    ):
        main_measure(sys.argv[1:])
    else:
        main()
