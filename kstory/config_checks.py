"""Checks shared by the config dataclasses: field types and preset sources."""

import dataclasses
import os
import typing

_TYPE_NAMES = {
    int: "an int",
    float: "a number",
    str: "a string",
    bool: "true or false",
    dict: "a dict",
}


def _accepts(annotation, value):
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def check_field_types(instance, section):
    """Raises a `ValueError` naming `section.field` when a value has the wrong type.

    Config files are Python, so nothing else stops `batch_size="16"`; the
    error would surface later as an unrelated `TypeError`.

    Args:
        instance: a config dataclass with `int`, `float`, `str`, `bool`, `dict`
            or `Optional[...]` fields (others are not checked).
        section: str. Its key prefix, e.g. `"data"`; `""` for none.

    Example:
    >>> from kstory.data.data_config import DataConfig
    >>> DataConfig(batch_size="16")
    Traceback (most recent call last):
    ...
    ValueError: data.batch_size must be an int; got '16' (str).
    """
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        annotation, value = hints[field.name], getattr(instance, field.name)
        if typing.get_origin(annotation) is typing.Union:
            if value is None:
                continue
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        if annotation in _TYPE_NAMES and not _accepts(annotation, value):
            raise ValueError(
                f"{_key(section, field.name)} must be {_TYPE_NAMES[annotation]}; "
                f"got {value!r} ({type(value).__name__})."
            )


def _key(section, name):
    return f"{section}.{name}" if section else name


def check_choices(instance, section, choices):
    """Raises a `ValueError` naming `section.field` when a field's value is
    not one of its choices.

    Args:
        instance: a config dataclass.
        section: str. Its key prefix; `""` for none.
        choices: dict of field name -> tuple of valid values.
    """
    for name, valid in choices.items():
        value = getattr(instance, name)
        if value not in valid:
            raise ValueError(f"{_key(section, name)} must be one of {valid}; got {value!r}.")


def check_at_least(instance, section, names, minimum):
    """Raises a `ValueError` naming `section.field` when a field is below
    `minimum` (1: "must be positive"; 0: "must be >= 0")."""
    wanted = "positive" if minimum == 1 else f">= {minimum}"
    for name in names:
        value = getattr(instance, name)
        if value < minimum:
            raise ValueError(f"{_key(section, name)} must be {wanted}; got {value}.")


def from_preset(loader, key, source):
    """`loader(source)` (a keras-hub `from_preset`), with an error naming the config key.

    Args:
        loader: callable. E.g. `keras_hub.models.Backbone.from_preset`.
        key: str. The config key that named `source`, e.g. `"data.tokenizer"`.
        source: str. A local preset or checkpoint folder, or a preset name.
    """
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        source = path
    elif os.sep in source or source.startswith((".", "~")):
        raise ValueError(
            f"{key} {source!r} is not a folder; give a keras-hub preset folder, a "
            "Hugging Face checkpoint folder, or a preset name."
        )
    try:
        return loader(source)
    except (ValueError, OSError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{key} {source!r} could not be loaded: {reason}") from error
