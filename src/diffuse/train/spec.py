"""What a training run trains: a :class:`RunSpec`, built from a preset plus overrides.

A run spec holds the network's configuration, the diffusion settings, the training
settings (:class:`~diffuse.train.train_config.TrainConfig`) and the data set. It is written to
``RUN/run.json`` when a run starts and read back on ``--resume``, so a run never depends
on the flags it was started with.

Overrides name a field as ``<section>.<field>`` with section ``model``, ``diffusion`` or
``train`` (``model.model_channels=32``, ``diffusion.schedule=linear``, ``train.lr=2e-4``);
values are JSON (numbers, ``true``, ``null``, ``[1, 2]``), a comma-separated list of
JSON values (``1,2,2``), or else a plain string; one value of a list setting is a list of
one (``model.attention_resolutions=8``) and an empty value an empty list
(``model.attention_resolutions=``, as ``[]``).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from diffuse import presets
from diffuse.data.survey import survey_data
from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.errors import ConfigError, DiffuseError
from diffuse.nn import ClassifierConfig, EncoderConfig, UNetConfig, config_from_dict
from diffuse.train.autoconfig import fit_to_data
from diffuse.train.recipes import recipe
from diffuse.train.train_config import TrainConfig

TASKS = ("diffusion", "classifier")
SECTIONS = ("model", "diffusion", "train")
SPEC_FORMAT = "diffuse-run"


@dataclass(frozen=True)
class DataSpec:
    """Where a run's images come from.

    name:     a data set name ("digits", "fashion-mnist", ...) or a folder of images.
    data_dir: a folder searched first for a named set's files (None: the usual places).
    download: whether a named set found nowhere may be downloaded.
    """

    name: str
    data_dir: str | None = None
    download: bool = True


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs besides its output folder.

    task:      "diffusion" (a denoising U-Net or an upsampler) or "classifier" (ADM's
               noisy classifier of x_t).
    preset:    the preset the settings started from, or None.
    model:     the network's configuration.
    diffusion: the diffusion process (for a classifier: the process whose x_t it reads).
    train:     the training settings.
    data:      the data set.
    """

    task: str
    preset: str | None
    model: EncoderConfig
    diffusion: DiffusionConfig
    train: TrainConfig
    data: DataSpec

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; use one of {', '.join(TASKS)}")
        is_classifier = isinstance(self.model, ClassifierConfig)
        if is_classifier != (self.task == "classifier"):
            kind = "a classifier" if is_classifier else f"a {self.model.kind} network"
            raise ConfigError(f"the {self.task} task cannot train {kind}")
        if self.task == "diffusion":
            self.diffusion.check_output_channels(self.model.in_channels, self.model.out_channels)
        if self.train.min_snr_gamma > 0 and (
            self.task != "diffusion" or self.diffusion.loss == "kl"
        ):
            what = "the classifier's cross-entropy" if self.task != "diffusion" else "the kl loss"
            raise ConfigError(
                f"train.min_snr_gamma weights the MSE of a diffusion loss; {what} has none "
                "(use diffusion.loss=mse or hybrid, or train.min_snr_gamma=0)"
            )

    @property
    def null_class(self) -> int | None:
        """The label meaning "no class" for classifier-free guidance, or None."""
        if isinstance(self.model, UNetConfig) and self.model.null_class:
            return self.model.num_classes
        return None

    @property
    def p_uncond(self) -> float:
        """Label-dropout probability: the setting, or 0.1 with a null class, else 0."""
        if self.train.p_uncond is not None:
            if self.train.p_uncond > 0 and self.null_class is None:
                raise ConfigError(
                    "train.p_uncond > 0 needs a model with a null class; set "
                    "model.null_class=true (and model.num_classes)"
                )
            return self.train.p_uncond
        return 0.1 if self.null_class is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "task": self.task,
            "preset": self.preset,
            "model": self.model.to_dict(),
            "diffusion": self.diffusion.to_dict(),
            "train": self.train.to_dict(),
            "data": {f.name: getattr(self.data, f.name) for f in fields(DataSpec)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        if data.get("format") != SPEC_FORMAT:
            raise ConfigError(f"not a run description (format {data.get('format')!r})")
        return cls(
            task=data["task"],
            preset=data["preset"],
            model=config_from_dict(data["model"]),
            diffusion=DiffusionConfig.from_dict(data["diffusion"]),
            train=TrainConfig.from_dict(data["train"]),
            data=DataSpec(**data["data"]),
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> RunSpec:
        """This spec with ``{"section.field": value}`` replaced (see the module docstring).

        An unknown key is refused with the nearest valid one; ``model.kind`` may only
        repeat the network's kind.
        """
        sections = {
            "model": self.model.to_dict(),
            "diffusion": self.diffusion.to_dict(),
            "train": self.train.to_dict(),
        }
        for key, value in overrides.items():
            section, name = check_setting(key, type(self.model))
            if name == "kind" and section == "model":
                if value != self.model.kind:
                    raise ConfigError(
                        f"model.kind {value!r} differs from the network's "
                        f"{self.model.kind!r}; the kind comes with the preset (choose another)"
                    )
                continue
            if isinstance(sections[section].get(name), list | tuple) and not isinstance(
                value, list | tuple
            ):
                # one value of a list setting: a list of one; nothing: an empty list
                value = [] if value == "" else [value]
            sections[section][name] = value
        try:
            return replace(
                self,
                model=config_from_dict(sections["model"]),
                diffusion=DiffusionConfig.from_dict(sections["diffusion"]),
                train=TrainConfig.from_dict(sections["train"]),
            )
        except DiffuseError:
            raise
        except (TypeError, ValueError) as error:
            raise ConfigError(f"invalid setting: {error} ({self._culprit(overrides)})") from None

    def _culprit(self, overrides: Mapping[str, Any]) -> str:
        """The first of ``overrides`` that fails on its own, for an error message."""
        for key, value in overrides.items():
            if len(overrides) == 1:
                return f"{key}={value!r}"
            try:
                self.with_overrides({key: value})
            except DiffuseError:
                return f"{key}={value!r}"
        return f"one of {', '.join(overrides)}"


def spec_from_preset(
    preset: str,
    data: DataSpec | str,
    *,
    task: str = "diffusion",
    overrides: Mapping[str, Any] | None = None,
    report: Callable[[str], None] | None = None,
) -> RunSpec:
    """The spec of training ``preset`` on ``data``, with the preset's training recipe.

    The channels, the classes and the image size are fitted to the data unless
    ``overrides`` give them (:mod:`diffuse.train.autoconfig`: the data set is surveyed,
    a folder's image headers read); ``report`` (e.g. ``print``) gets one line per setting
    the data decided. For the classifier task a diffusion preset gives the encoder half of
    its U-Net with a classification head (ADM section 4.1), over the data's classes; a
    classifier preset is taken as it is.
    """
    chosen = presets.get(preset)
    data = DataSpec(data) if isinstance(data, str) else data
    overrides = dict(overrides or {})
    model = chosen.model_config
    kind = ClassifierConfig if task == "classifier" else type(model)
    for key in overrides:
        check_setting(key, kind)
    fitted = fit_to_data(model, task, survey_data(data.name), overrides)
    settings = {**fitted.settings, **overrides}
    if task == "classifier" and not isinstance(model, ClassifierConfig):
        model = classifier_for(model, settings.pop("model.out_channels", None))
    spec = RunSpec(task, preset, model, chosen.diffusion, recipe(preset, task), data)
    spec = spec.with_overrides(settings)
    for note in fitted.notes if report else ():
        report(f"data: {note}")
    return spec


def classifier_for(model: EncoderConfig, num_classes: int | None = None) -> ClassifierConfig:
    """The noisy classifier matching a diffusion network: its encoder settings, attention
    pooling, ``num_classes`` logits (default: the network's classes). Its recipe leaves
    out class attention: the classifier predicts the class, it is not given one."""
    num_classes = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    if num_classes is None:
        raise ConfigError(
            "this preset's network is unconditional, so its classifier's class count is "
            "unknown; set model.out_channels=<number of classes>"
        )
    shared = {f.name: getattr(model, f.name) for f in fields(EncoderConfig)}
    shared["blocks"] = tuple(kind for kind in model.blocks if kind != "clsatn")
    return ClassifierConfig(**{**shared, "out_channels": int(num_classes)}, pool="attention")


def split_key(key: str) -> tuple[str, str]:
    """``"model.model_channels"`` -> ("model", "model_channels"), checked."""
    section, dot, name = key.partition(".")
    if not dot or section not in SECTIONS or not name:
        raise ConfigError(
            f"override {key!r} must be <section>.<field> with section one of "
            f"{', '.join(SECTIONS)} (e.g. model.model_channels=32)" + nearest(section, SECTIONS)
        )
    return section, name


def check_setting(key: str, model: type[EncoderConfig], where: str = "") -> tuple[str, str]:
    """``key`` split as :func:`split_key`, refused unless its section has that field (the
    model's fields are those of the network class ``model``). The error names the key,
    ``where`` it came from, and the nearest valid key."""
    section, name = split_key(key)
    valid = setting_names(section, model)
    if name not in valid:
        hint = nearest(name, valid, section)
        if not hint:
            hint = f"; the {section} settings are {', '.join(valid)}"
        raise ConfigError(f"unknown setting {key}{where} ({section} has no {name!r}){hint}")
    return section, name


def setting_names(section: str, model: type[EncoderConfig]) -> list[str]:
    """The fields of ``section`` ("model": those of the network class ``model``, and its
    ``kind``)."""
    if section == "model":
        return ["kind", *(f.name for f in fields(model))]
    return [f.name for f in fields(DiffusionConfig if section == "diffusion" else TrainConfig)]


def nearest(name: str, valid, prefix: str = "") -> str:
    """(difflib) "; did you mean <prefix>.<the nearest valid name>?", or "" when none is near."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?"


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=2e-4"`` -> ("train.lr", 0.0002); see the module docstring for values."""
    key, equals, raw = text.partition("=")
    if not equals:
        raise ConfigError(f"override {text!r} must look like <section>.<field>=<value>")
    split_key(key.strip())
    return key.strip(), parse_value(raw.strip())


def parse_value(raw: str) -> Any:
    """A JSON value, a comma-separated list of JSON values, or the string itself."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    if "," in raw:
        return [parse_value(part.strip()) for part in raw.split(",") if part.strip()]
    return raw
