"""Generation from trained models: stages, the two-stage upsampling pipeline, sample
folders and the figures of the papers.

``Stage(model, diffusion, SamplerSettings("dpm++2m", "quad20"), cfg=1.0)`` describes one
model and how to sample it (``precision="auto"``, the default, runs the network in bf16
where that is measured faster); ``generate(stage, n, seed=0, upsampler=...)`` makes uint8
samples (``generate_batches`` batch by batch); ``save_samples(folder, samples)`` writes PNGs,
a grid and an ``.npz`` (``write_samples`` as the batches come, keeping them when stopped).
"""

from diffuse.rendering import Figure
from diffuse.sample.figures import completions, interpolation, latent_interpolation, progressive
from diffuse.sample.models import load_classifier, load_diffusion_model
from diffuse.sample.output import SamplesInterrupted, save_samples, write_samples
from diffuse.sample.pipeline import Samples, check_request, generate, generate_batches, quantize
from diffuse.sample.sampler import SAMPLERS, SamplerSettings
from diffuse.sample.stage import SAMPLING_PRECISIONS, Stage

__all__ = [
    "SAMPLERS",
    "SAMPLING_PRECISIONS",
    "Figure",
    "SamplerSettings",
    "Samples",
    "SamplesInterrupted",
    "Stage",
    "check_request",
    "completions",
    "generate",
    "generate_batches",
    "interpolation",
    "latent_interpolation",
    "load_classifier",
    "load_diffusion_model",
    "progressive",
    "quantize",
    "save_samples",
    "write_samples",
]
