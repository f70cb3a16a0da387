"""``diffuse train-classifier``: train ADM's noisy classifier p(y | x_t, t) for guidance.

    diffuse train-classifier --preset digits --data digits --out runs/digits-classifier

trains, on images noised to a uniformly drawn t (ADM section 4.1), the classifier that
matches a diffusion preset (the encoder half of its U-Net with attention pooling; an
adm-classifier-* preset is taken as it is). metrics.jsonl reports its accuracy per
quarter of the timestep range (accuracy_q0 nearest the data, accuracy_q3 nearest pure
noise). Options, run folder, --resume and SIGINT/SIGTERM as for `diffuse train`.
"""

from __future__ import annotations

from diffuse.cli.train import add_command


def register(subparsers) -> None:
    add_command(
        subparsers,
        "train-classifier",
        "train a noisy classifier (for classifier guidance)",
        __doc__,
    )
