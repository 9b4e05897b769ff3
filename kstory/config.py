"""The run configuration: loading config files and `--set` overrides."""

import dataclasses
import importlib.util
import json
import os
import typing

from kstory.config_checks import check_field_types
from kstory.data.data_config import DataConfig
from kstory.distribution import DISTRIBUTIONS
from kstory.models.model_config import ModelConfig
from kstory.training.train_config import TrainConfig


@dataclasses.dataclass
class Config:
    """Everything a run needs, as data.

    Args:
        data: `DataConfig`. Source, windows, splits and pipeline.
        model: `ModelConfig`. Architecture, losses and precision.
        train: `TrainConfig`. Epochs, optimizer, callbacks.
        seed: int. Seed of the run.
        distribution: str. `"none"` (one device) or `"data_parallel"`:
            Keras's data-parallel engine for the backend, the global
            `data.batch_size` split across all devices (see
            `kstory.distribution`).
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    seed: int = 0
    distribution: str = "none"

    def __post_init__(self):
        check_field_types(self, "config")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {DISTRIBUTIONS}; got {self.distribution!r}."
            )


def load_config(path, smoke=False):
    """Runs `get_config(smoke=...)` from a config file and returns its `Config`.

    Args:
        path: str. A file such as `configs/tiny.py`.
        smoke: bool. Ask the config for its few-second smoke variant.
    """
    if not os.path.isfile(path):
        raise ValueError(f"No config file at {path!r}.")
    spec = importlib.util.spec_from_file_location("kstory_config_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} defines no get_config(smoke=False).")
    try:
        config = module.get_config(smoke=smoke)
    except TypeError as error:  # E.g. a misspelt key: an unexpected keyword argument.
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(config, Config):
        raise ValueError(f"{path}: get_config() returned {type(config).__name__}, not Config.")
    return config


def _field_names(instance, prefix=""):
    names = []
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if dataclasses.is_dataclass(value):
            names += _field_names(value, f"{prefix}{field.name}.")
        else:
            names.append(prefix + field.name)
    return names


def _parse_value(key, text, annotation):
    optional = typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(
        annotation
    )
    if optional:
        if text.lower() in ("none", "null", ""):
            return None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{key} takes true or false; got {text!r}.")
    if annotation in (int, float, str):
        try:
            return annotation(text)
        except ValueError:
            article = "an" if annotation is int else "a"
            raise ValueError(
                f"{key} takes {article} {annotation.__name__}; got {text!r}."
            ) from None
    if annotation is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ValueError(f'{key} takes a JSON object, e.g. {{"alpha": 0.75}}; got {text!r}.')
        return value
    raise ValueError(f"{key} cannot be set from the command line.")


def apply_overrides(config, assignments):
    """Returns a copy of `config` with `key=value` assignments applied.

    Keys are dotted paths (`data.batch_size=32`). An unknown key, a value of
    the wrong type or an invalid value raises a `ValueError` naming the key.

    Example:
    >>> apply_overrides(Config(), ["data.batch_size=4"]).data.batch_size
    4
    """
    # Values are parsed one by one but set together, per section, so that a
    # pair that is only valid jointly (data.source with data.path) can be
    # given in any order.
    changes = {}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        if not separator:
            raise ValueError(f"Override {assignment!r} is not of the form key=value.")
        key = key.strip()
        valid = _field_names(config)
        if key not in valid:
            raise ValueError(f"Unknown config key {key!r}. Valid keys: {', '.join(valid)}.")
        *parents, name = key.split(".")
        section = config
        for parent in parents:
            section = getattr(section, parent)
        hints = typing.get_type_hints(type(section))
        changes.setdefault(tuple(parents), {})[name] = _parse_value(key, text.strip(), hints[name])
    for parents, values in changes.items():
        config = _replace_path(config, list(parents), values)
    return config


def _replace_path(instance, parents, values):
    if parents:
        child = getattr(instance, parents[0])
        return dataclasses.replace(
            instance, **{parents[0]: _replace_path(child, parents[1:], values)}
        )
    return dataclasses.replace(instance, **values)


def config_to_dict(config):
    return dataclasses.asdict(config)


# Keys that older kstory versions wrote and nothing ever read: a workdir that
# holds them still loads, without them.
_REMOVED_KEYS = {"data": ("cache", "shuffle_buffer")}


def _without_removed_keys(values):
    values = dict(values)
    for section, keys in _REMOVED_KEYS.items():
        values[section] = {
            key: value for key, value in values.get(section, {}).items() if key not in keys
        }
    return values


def config_from_dict(values):
    """Rebuilds a `Config` from `config_to_dict`'s output (a workdir's config.json)."""
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    values = _without_removed_keys(values)
    for name, section in sections.items():
        known = {field.name for field in dataclasses.fields(section)}
        unknown = sorted(set(values.get(name, {})) - known)
        if unknown:
            raise ValueError(
                f"Unknown config key(s) {', '.join(f'{name}.{key}' for key in unknown)}; "
                "was the workdir written by another kstory version?"
            )
    return Config(
        **{name: section(**values[name]) for name, section in sections.items()},
        seed=values["seed"],
        distribution=values.get("distribution", "none"),
    )
