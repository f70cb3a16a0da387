"""A preset's network fitted to the data it trains on, and how the images reach it.

A preset is an architecture and a recipe; the data decides what the architecture cannot
know. With ``--preset``, each setting below is taken from the data unless it was given
(``--set``, a flag, or a ``--config`` file; a given value is never changed):

- ``model.in_channels``: the data's channels (1 when every image is grey, else 3);
  ``model.out_channels`` follows (twice them for a learned variance, as in the preset).
- Classes: a class-conditional preset takes the data's class count (``model.num_classes``,
  a classifier's ``model.out_channels``); on data without classes (a folder without
  sub-folders) it becomes unconditional, with no null class. An unconditional preset stays
  unconditional: the data's classes are used only when asked for
  (``--set model.num_classes=K``). ``model.num_classes=null`` alone also drops the null
  class.
- ``model.image_size``: the preset's, when the images are at least that large (they are
  centre-cropped and shrunk to it, and :func:`fitting_notes` says so); when they are
  smaller, the largest size not above their smallest side that the network can halve at
  each level, because a preset never enlarges images on its own (``--set
  model.image_size`` does). A named set keeps its usual ways to the preset's size: 28 ->
  32 by padding, a whole-factor shrink (28 -> 14).
- When the size changes (from the data or given), attention stays at the same levels of
  the network (the ``fashion`` network's attention at 14x14 of 28 is at 8x8 of 16) and an
  upsampler keeps its factor (``model.low_res_size``), unless those are given.

The preset's size is kept when the images are larger, rather than growing the network to
them, because a preset's depth, attention and cost are designed for its size (the
``digits`` network at 256x256 would put self-attention over 16,384 positions): training
at the data's size is one ``--set model.image_size=N`` away, and the report says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diffuse.data.resizing import describe_fit
from diffuse.data.survey import DataSurvey
from diffuse.errors import DataError
from diffuse.nn import ClassifierConfig, EncoderConfig, SuperResConfig

# (native size, model size) pairs that a named set reaches by padding, not resizing.
PADDED_SIZES = {(28, 32)}

# Distinct image sizes a folder's report names one by one; the rest are summed up.
REPORTED_SIZES = 4


@dataclass(frozen=True)
class Fitted:
    """What the data decided: ``{"model.<field>": value}`` and one line per decision."""

    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fit_to_data(
    model: EncoderConfig, task: str, survey: DataSurvey, given: Mapping[str, Any]
) -> Fitted:
    """The settings of the preset network ``model`` (for the ``task``) that ``survey``'s
    data decides, leaving alone every key of ``given`` (the user's settings, by
    ``"section.field"``); see the module docstring for the rules."""
    fitted = Fitted()
    _fit_channels(model, task, survey, given, fitted)
    _fit_classes(model, task, survey, given, fitted)
    _fit_size(model, task, survey, given, fitted)
    return fitted


def _fit_channels(model, task, survey, given, fitted: Fitted) -> None:
    channels = given.get("model.in_channels", survey.channels)
    if "model.in_channels" not in given and channels != model.in_channels:
        fitted.settings["model.in_channels"] = channels
        kind = "grey" if channels == 1 else "colour"
        fitted.notes.append(
            f"{channels} channel(s) from the data ({kind} images; the preset has "
            f"{model.in_channels})"
        )
    if task != "classifier" and "model.out_channels" not in given and isinstance(channels, int):
        out_channels = model.out_channels // model.in_channels * channels
        if out_channels != model.out_channels:
            fitted.settings["model.out_channels"] = out_channels


def _fit_classes(model, task, survey, given, fitted: Fitted) -> None:
    key = "model.out_channels" if task == "classifier" else "model.num_classes"
    if key in given:
        if given[key] is None and getattr(model, "null_class", False):
            fitted.settings.setdefault("model.null_class", False)  # no labels, no null label
        return
    preset = model.out_channels if isinstance(model, ClassifierConfig) else model.num_classes
    if preset is None and task != "classifier":
        _note_unused_classes(survey, fitted)
        return
    names = survey.class_names()
    if not names and task == "classifier":
        raise DataError(
            f"a classifier learns classes, and {survey.name} has none: put its images in "
            "one sub-folder per class"
        )
    if not names:
        fitted.settings.update({"model.num_classes": None, "model.null_class": False})
        fitted.notes.append(
            f"an unconditional model: {survey.name} has no class sub-folders (the preset "
            "has classes; put the images in one sub-folder per class to condition on them)"
        )
    elif len(names) != preset:
        fitted.settings[key] = len(names)
        had = "" if preset is None else f"; the preset has {preset}"
        fitted.notes.append(f"{len(names)} classes from the data ({_names(names)}{had})")


def _note_unused_classes(survey: DataSurvey, fitted: Fitted) -> None:
    try:
        names = survey.class_names()
    except DataError:  # images both loose and in sub-folders: no classes to offer
        return
    if names:
        fitted.notes.append(
            f"the data's {len(names)} classes ({_names(names)}) are not used: the preset is "
            f"unconditional (--set model.num_classes={len(names)} conditions on them)"
        )


def _fit_size(model: EncoderConfig, task: str, survey: DataSurvey, given, fitted: Fitted) -> None:
    size = given.get("model.image_size")
    if size is None:
        size = _size_for(model, survey)
        if size != model.image_size:
            fitted.settings["model.image_size"] = size
            side = survey.smallest_side
            why = (
                "the data's size"
                if size == side
                else f"the largest size below the images' smallest side ({side}) that the "
                f"network's {model.levels} levels can halve"
            )
            enlarge = (
                "a named set is never enlarged"
                if survey.named
                else f"--set model.image_size={model.image_size} does"
            )
            fitted.notes.append(
                f"{size}x{size} images, {why}: the preset's {model.image_size}x"
                f"{model.image_size} would enlarge them ({enlarge})"
            )
    if size == model.image_size or not isinstance(size, int) or size < 1:
        return
    if "model.attention_resolutions" not in given and model.attention_resolutions:
        levels = [k for k in range(model.levels) if model.uses_attention(k)]
        moved = [size >> k for k in levels]
        fitted.settings["model.attention_resolutions"] = moved
        fitted.notes.append(
            f"attention at {_pixels(moved)}, the levels where the preset has it at "
            f"{_pixels(model.attention_resolutions)}"
        )
    upsampler = isinstance(model, SuperResConfig) and model.low_res_size and task != "classifier"
    if upsampler and "model.low_res_size" not in given:
        if (size * model.low_res_size) % model.image_size == 0:
            low = size * model.low_res_size // model.image_size
            fitted.settings["model.low_res_size"] = low
            fitted.notes.append(
                f"upsampling from {low}x{low}, the preset's factor "
                f"({model.low_res_size} -> {model.image_size})"
            )


def _size_for(model: EncoderConfig, survey: DataSurvey) -> int:
    """The image size the preset's network trains at on this data (module docstring)."""
    side, size = survey.smallest_side, model.image_size
    if side >= size or (survey.named and (side, size) in PADDED_SIZES):
        return size
    factor = 2 ** (model.levels - 1)
    candidates = [s for s in range(factor, side + 1, factor)]
    if survey.named:  # a named set shrinks by whole factors only
        candidates = [s for s in candidates if side % s == 0]
    return max(candidates, default=size)


def fitting_notes(survey: DataSurvey, size: int) -> list[str]:
    """How the images of ``survey`` are brought to ``size`` x ``size``: one line per
    distinct image size that changes (the few most common named, the rest summed up)."""
    if survey.folder is None:
        native = survey.native_size
        if native == size:
            return []
        how = "padded with black" if (native, size) in PADDED_SIZES else "shrunk"
        how = "enlarged" if native < size and how == "shrunk" else how
        return [f"{survey.name}'s {native}x{native} images are {how} to {size}x{size}"]
    counts = Counter(survey.folder.sizes).most_common()
    changes = [(w, h, n, describe_fit(w, h, size)) for (w, h), n in counts]
    changes = [change for change in changes if change[3] is not None]
    notes = [
        f"{n} image(s) of {w}x{h} (width x height) are {how}"
        for w, h, n, how in changes[:REPORTED_SIZES]
    ]
    rest = changes[REPORTED_SIZES:]
    if rest:
        notes.append(
            f"{sum(n for _, _, n, _ in rest)} image(s) of {len(rest)} other sizes are "
            f"centre-cropped and resized to {size}x{size} the same way"
        )
    return notes


def _pixels(resolutions) -> str:
    return ", ".join(f"{r}x{r}" for r in resolutions)


def _names(names: tuple[str, ...], shown: int = 5) -> str:
    listed = ", ".join(names[:shown])
    return listed + (f", ... {len(names) - shown} more" if len(names) > shown else "")
