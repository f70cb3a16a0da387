"""A run's settings from a file: ``diffuse train --config FILE``.

A config file holds one object with the keys of a run description, exactly as
``--show-config`` prints it and ``RUN/run.json`` stores it: ``format`` ("diffuse-run"),
``task``, ``preset``, ``model``, ``diffusion``, ``train`` and ``data`` (``name``,
``data_dir``, ``download``). Any of them may be left out, so a file can describe a whole
run (and then reproduces it) or hold a few settings (``{"train": {"lr": 2e-4}}``). JSON
always; YAML (``.yaml``, ``.yml``) when PyYAML is installed (``pip install pyyaml``).

Precedence, lowest first:

1. the preset (``--preset``, else the file's ``preset``) and its training recipe, with
   the channels, classes and image size fitted to the data
   (:mod:`diffuse.train.autoconfig`) where nothing below gives them;
2. the file's settings;
3. the command's flags (``--data``, ``--lr``, ...) and ``--set``.

A file without a preset describes the whole network itself (``model`` with its
``kind``), and its ``diffusion`` and ``train`` settings start from the defaults.
Unknown keys are refused with the nearest valid one, malformed files with the line and
column of the fault, and nothing is written before the whole configuration is checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from diffuse import presets
from diffuse.diffusion.diffusion_config import DiffusionConfig
from diffuse.errors import ConfigError, MissingFileError
from diffuse.nn import ClassifierConfig, EncoderConfig, config_from_dict
from diffuse.nn.network_config import CONFIG_CLASSES
from diffuse.train.spec import (
    SECTIONS,
    SPEC_FORMAT,
    TASKS,
    DataSpec,
    RunSpec,
    check_setting,
    nearest,
    spec_from_preset,
)
from diffuse.train.train_config import TrainConfig

FILE_KEYS = ("format", "task", "preset", *SECTIONS, "data")
YAML_SUFFIXES = (".yaml", ".yml")


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The settings in the JSON or YAML file ``path``, their layout checked (the values
    are checked when a spec is made of them)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(f"no config file {path}: give a file that --show-config wrote")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a config file (a run's is {path}/run.json)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    config = (
        _parse_yaml(text, path) if path.suffix.lower() in YAML_SUFFIXES else _parse_json(text, path)
    )
    _check_layout(config, path)
    return config


def spec_from_config(
    config: Mapping[str, Any],
    *,
    task: str = "diffusion",
    preset: str | None = None,
    data: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    report: Callable[[str], None] | None = None,
    where: str = "",
) -> RunSpec:
    """The spec of ``config`` (as :func:`read_config` returns it; ``{}`` for none) with
    what the command line gives on top: ``preset``, ``data`` (``name``, ``data_dir``,
    ``download``; None values are not given) and ``overrides`` (``{"section.field":
    value}``). ``report`` gets the settings the data decided; ``where`` (" in FILE") names
    the file in errors. See the module docstring for the precedence."""
    if config.get("task", task) != task:
        command = "train-classifier" if config["task"] == "classifier" else "train"
        raise ConfigError(
            f"the settings{where} are of a {config['task']} run; train them with "
            f"`diffuse {command}`"
        )
    data_spec = _data_spec(config.get("data", {}), data or {}, where)
    preset = preset or config.get("preset")
    overrides = dict(overrides or {})
    if preset is None:
        return _spec_without_preset(config, task, data_spec, overrides, where)
    kind = ClassifierConfig if task == "classifier" else type(presets.get(preset).model_config)
    settings = file_settings(config, kind, where)
    return spec_from_preset(
        preset, data_spec, task=task, overrides={**settings, **overrides}, report=report
    )


def file_settings(
    config: Mapping[str, Any], kind: type[EncoderConfig], where: str = ""
) -> dict[str, Any]:
    """The file's ``model``, ``diffusion`` and ``train`` settings as ``{"section.field":
    value}``, each key checked against the network class ``kind``."""
    settings = {}
    for section in SECTIONS:
        for name, value in config.get(section, {}).items():
            key = f"{section}.{name}"
            check_setting(key, kind, where)
            settings[key] = value
    return settings


def _spec_without_preset(config, task, data: DataSpec, overrides, where: str) -> RunSpec:
    kind = CONFIG_CLASSES.get(config.get("model", {}).get("kind"))
    if kind is None:
        raise ConfigError(
            f"the settings{where} name no preset, so they must describe the network: a "
            f"model section with its kind ({', '.join(CONFIG_CLASSES)}); or give --preset"
        )
    settings = file_settings(config, kind, where)
    for key in overrides:
        check_setting(key, kind)
    model = config_from_dict(dict(config["model"]))
    base = RunSpec(task, None, model, DiffusionConfig(), TrainConfig(), data)
    return base.with_overrides({**settings, **overrides})


def _data_spec(from_file: Mapping[str, Any], given: Mapping[str, Any], where: str) -> DataSpec:
    merged = {**from_file, **{k: v for k, v in given.items() if v is not None}}
    if not merged.get("name"):
        raise ConfigError(
            "a new run needs --preset and --data, or a config file (--config) that names "
            "them, or --resume"
        )
    types = {"name": (str, "a string"), "data_dir": ((str, type(None)), "a string or null")}
    types["download"] = (bool, "true or false")
    for key, value in merged.items():
        kind, words = types[key]
        if not isinstance(value, kind):
            raise ConfigError(f"data.{key}{where} must be {words}, got {value!r}")
    return DataSpec(**merged)


# ----------------------------------------------------------------------------- parsing


def _parse_json(text: str, path: Path) -> Any:
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ConfigError(f"{path}: key {repeated[0]!r} appears twice in one object")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path}, line {error.lineno}, column {error.colno}: {error.msg} (not valid "
            "JSON; --show-config prints a valid file)"
        ) from None


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            f"{path} is YAML, which needs PyYAML: pip install pyyaml (or give the settings "
            "as JSON, as --show-config prints them)"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}{at}: {problem} (not valid YAML)") from None


def _check_layout(config: Any, path: Path) -> None:
    """One object with known keys, sections that are objects, a known format and task."""
    where = f" in {path}"
    if not isinstance(config, dict):
        raise ConfigError(
            f"{path} must hold one object of settings (as --show-config prints), not "
            f"{type(config).__name__}"
        )
    for key in config:
        if key not in FILE_KEYS:
            hint = nearest(str(key), FILE_KEYS) or f"; the keys are {', '.join(FILE_KEYS)}"
            raise ConfigError(f"unknown key {key!r}{where}{hint}")
    for section in (*SECTIONS, "data"):
        if not isinstance(config.get(section, {}), dict):
            raise ConfigError(
                f"{section}{where} must be an object of settings, not "
                f"{type(config[section]).__name__}"
            )
    if config.get("format", SPEC_FORMAT) != SPEC_FORMAT:
        raise ConfigError(f"format{where} is {config['format']!r}; a run's is {SPEC_FORMAT!r}")
    if config.get("task", TASKS[0]) not in TASKS:
        raise ConfigError(f"task{where} is {config['task']!r}; use one of {', '.join(TASKS)}")
    known = [f.name for f in fields(DataSpec)]
    for key in config.get("data", {}):
        if key not in known:
            hint = nearest(key, known, "data") or f"; the data keys are {', '.join(known)}"
            raise ConfigError(f"unknown setting data.{key}{where}{hint}")
