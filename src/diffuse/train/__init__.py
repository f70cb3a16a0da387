"""Training: diffusion models, upsamplers and noisy classifiers, on one CPU or many GPUs.

```python
from diffuse.train import spec_from_preset, train, resume

spec = spec_from_preset("digits", "digits", overrides={"train.steps": 500})
result = train(spec, "runs/digits")      # checkpoints, metrics.jsonl, samples/
result = resume("runs/digits", changes={"train.steps": 1000})
```

A run is described by a :class:`RunSpec` (network, diffusion process, :class:`TrainConfig`,
data set), starts from a preset and its training recipe fitted to the data (or from a
config file: :func:`read_config`, :func:`spec_from_config`), and lives in a run folder
(:mod:`diffuse.train.run`). Resuming continues exactly: an interrupted and resumed run
ends with the same weights, bit for bit, as an uninterrupted one.
"""

from diffuse.train.config_file import read_config, spec_from_config
from diffuse.train.ema import EMA
from diffuse.train.objectives import ClassifierObjective, DiffusionObjective
from diffuse.train.preview import preview_grid, sample_images
from diffuse.train.recipes import recipe
from diffuse.train.run import RunFolder
from diffuse.train.session import resume, train
from diffuse.train.spec import DataSpec, RunSpec, classifier_for, parse_override, spec_from_preset
from diffuse.train.train_config import TrainConfig, field_help
from diffuse.train.trainer import Trainer, TrainResult
from diffuse.train.training_data import load_training_data

__all__ = [
    "EMA",
    "ClassifierObjective",
    "DataSpec",
    "DiffusionObjective",
    "RunFolder",
    "RunSpec",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "classifier_for",
    "field_help",
    "load_training_data",
    "parse_override",
    "preview_grid",
    "read_config",
    "recipe",
    "resume",
    "sample_images",
    "spec_from_config",
    "spec_from_preset",
    "train",
]
