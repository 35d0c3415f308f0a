"""The machinery under the typed config: fields with docs and rules, type coercion, dotted paths, help text.

A section is a frozen dataclass whose fields are made with `option(default, doc, *rules)`. A section may also
define `check(self, config)` for rules that involve other sections; `pipelines.core.config.from_dict` runs
every section's check at load, so a bad combination fails before any work, naming both keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import field
from typing import Any

import yaml

from pipelines.core.errors import ConfigError

Rule = Callable[[Any], "str | None"]


def greater_than(bound: float) -> Rule:
    return lambda value: None if value > bound else f"must be > {bound:g}, got {value!r}"


def at_least(bound: float) -> Rule:
    return lambda value: None if value >= bound else f"must be >= {bound:g}, got {value!r}"


def below(bound: float) -> Rule:
    return lambda value: None if value < bound else f"must be < {bound:g}, got {value!r}"


def one_of(*choices: str) -> Rule:
    def check(value: Any) -> str | None:
        values = value if isinstance(value, tuple) else (value,)
        bad = [item for item in values if item not in choices]
        return None if not bad else f"must be one of {list(choices)}, got {bad[0]!r}"

    return check


NAME_LENGTH = 100  # a folder name, with room for the suffixes of staging folders under the file system's 255


def plain_name(value: Any) -> str | None:
    """A name that is safe as one folder: letters, digits, '-', '_' and '.', not starting with '.', at most
    `NAME_LENGTH` characters."""
    if len(value) > NAME_LENGTH:
        return f"must be at most {NAME_LENGTH} characters, got {len(value)}"
    return None if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", value) else \
        f"must be a plain name (letters, digits, '-', '_', '.'; not starting with '.'), got {value!r}"


def non_empty(value: Any) -> str | None:
    return None if len(value) else "must not be empty"


def option(default: Any, doc: str, *rules: Rule) -> Any:
    """A config field with its one-line doc and the rules its value must pass."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, "rules": rules})
    return field(default=default, metadata={"doc": doc, "rules": rules})


def _coerce(value: Any, kind: Any, path: str) -> Any:
    """Checks `value` against the annotation `kind` and returns it in that type."""
    origin = typing.get_origin(kind)
    if origin is types.UnionType:  # `float | None`
        if value is None:
            return None
        kinds = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        exact = next((arg for arg in kinds if type(value) is arg), None)
        if exact is None and len(kinds) > 1:  # `bool | str`: a value of neither type is for the field's rules
            return value
        kind = exact or kinds[0]
        origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: must be a mapping, got {value!r}")
        return build(kind, value, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: must be a mapping, got {value!r}")
        _, item_kind = typing.get_args(kind)
        return {str(key): _coerce(item, item_kind, f"{path}.{key}") for key, item in value.items()}
    if origin is tuple or kind is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: must be a list, got {value!r}")
        args = typing.get_args(kind)
        item_kind = args[0] if args else Any
        return tuple(_coerce(item, item_kind, f"{path}[{index}]") for index, item in enumerate(value))
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: must be an integer, got {value!r}")
        return value
    if kind is float:
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept any text float() understands.
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{path}: must be a finite number, got {value!r}")
        return number
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be a string, got {value!r}")
        return value
    return value


# Fields that moved: the old key names the new one instead of "unknown key".
MOVED = {"data.in_memory_mb": "runtime.in_memory_mb"}


def build(cls: type, values: dict, prefix: str = "") -> Any:
    """Builds dataclass `cls` from a mapping, checking keys, types and rules."""
    fields = {item.name: item for item in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields and path in MOVED:
            raise ConfigError(f"{path}: moved to {MOVED[path]} (it changes speed or memory, never a result)")
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            raise ConfigError(f"{path}: unknown key{hint}")
        kwargs[key] = _coerce(value, hints[key], path)
    instance = cls(**kwargs)
    for name, item in fields.items():
        if getattr(instance, name) is None:  # an optional field left unset: its default is decided where it is used
            continue
        for rule in item.metadata.get("rules", ()):
            problem = rule(getattr(instance, name))
            if problem:
                raise ConfigError(f"{prefix + '.' if prefix else ''}{name}: {problem}")
    return instance


def check_sections(section: Any, config: Any) -> None:
    """Runs `check(config)` of `section` and of every section nested in it (the cross-field rules)."""
    if hasattr(section, "check"):
        section.check(config)
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            check_sections(value, config)


def to_dict(config: Any) -> Any:
    """The resolved config as plain YAML-friendly data."""
    if dataclasses.is_dataclass(config):
        return {item.name: to_dict(getattr(config, item.name)) for item in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {key: to_dict(value) for key, value in config.items()}
    if isinstance(config, tuple):
        return [to_dict(value) for value in config]
    return config



def get_path(config: Any, path: str) -> Any:
    """Returns the value at a dotted path such as `train.learning_rate`."""
    value = config
    for part in path.split("."):
        if not dataclasses.is_dataclass(value) or part not in {f.name for f in dataclasses.fields(value)}:
            raise ConfigError(f"{path}: unknown key")
        value = getattr(value, part)
    return value


def set_path(tree: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: '{part}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    """Parses `key.path=value` strings; values are read as YAML scalars (3, 1e-3, true, [16, 32])."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        try:
            parsed.append((key.strip(), read_yaml(text)))
        except yaml.YAMLError as error:  # not YAML, or a tag safe loading refuses (!!python/...)
            raise ConfigError(f"--set {item!r}: the value is not a plain YAML value "
                              f"({one_line(error)})") from None
    return parsed


class StrictLoader(yaml.SafeLoader):
    """Safe loading that also refuses a key given twice in one mapping (YAML lets the last win silently) and
    aliases (`*name`: a few hundred bytes can expand to hundreds of megabytes)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a config",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(text: str):
    """A config's YAML (a file, or a --set value) by `StrictLoader`."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def one_line(error: Exception) -> str:
    """An error's message on one line (YAML's span several, with a caret under the column)."""
    return " ".join(str(error).split())



def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per field: dotted path, default and doc (for `--help`)."""
    lines = []
    for item in dataclasses.fields(cls):
        path = f"{prefix}{item.name}"
        kind = typing.get_type_hints(cls)[item.name]
        if dataclasses.is_dataclass(kind):
            lines.extend(describe(kind, f"{path}."))
            continue
        default = item.default if item.default is not dataclasses.MISSING else "(see configs)"
        lines.append(f"  {path} = {default!r}: {item.metadata.get('doc', '')}")
    return lines
