"""The configuration reference, generated from the typed config so that it cannot drift from the code.

`markdown()` returns one table per section: every field's dotted path, type, default, rules and one-line doc,
then the section's cross-field rules (the messages its `check` raises). The docs site builds it at build time
(`docs/hooks.py`); `python -m pipelines.core.config.reference` prints it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Iterator
from typing import Any

import yaml

from pipelines.core.config import Config, schema


@dataclasses.dataclass(frozen=True)
class Field:
    path: str  # dotted, with <name> where a mapping's key goes: data.columns.<column>.min
    kind: str
    default: str
    rules: tuple[str, ...]
    doc: str


def _type_name(kind: Any) -> str:
    """A reader's name for an annotation: `float or unset`, `list of str`, `mapping of name to number`."""
    if typing.get_origin(kind) is types.UnionType:
        return " or ".join("unset" if arg is type(None) else _type_name(arg) for arg in typing.get_args(kind))
    if kind is tuple or typing.get_origin(kind) is tuple:
        args = [arg for arg in typing.get_args(kind) if arg is not Ellipsis]
        return "list" if not args or args[0] is Any or args[0] is dict else f"list of {_type_name(args[0])}"
    if typing.get_origin(kind) is dict:
        _, value = typing.get_args(kind)
        return f"mapping of name to {_type_name(value)}"
    if dataclasses.is_dataclass(kind):
        return "the fields below"
    return {bool: "bool", int: "int", float: "number", str: "str", dict: "mapping"}.get(kind, str(kind))


def _default(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    return item.default_factory()  # type: ignore[misc]


def _yaml(value: Any) -> str:
    """A default as it would be written in a config file."""
    if value is None:
        return "unset"
    if value == "":
        return '""'
    text = yaml.safe_dump(schema.to_dict(value), default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix(" ...").strip()


def describe_rule(rule: schema.Rule) -> str:
    """What a field rule demands, read from the rule itself (the factories' bounds and choices)."""
    name = rule.__qualname__.split(".")[0]
    bound = inspect.getclosurevars(rule).nonlocals
    comparisons = {"greater_than": ">", "at_least": ">=", "below": "<"}
    if name in comparisons:
        return f"{comparisons[name]} {_number(bound['bound'])}"
    if name == "one_of":
        return "one of " + ", ".join(f"`{choice}`" for choice in bound["choices"])
    if rule.__doc__:  # a named rule says what it wants; `NAME` in it is a constant of its module
        return re.sub(r"`([A-Z_]+)`", lambda match: str(rule.__globals__.get(match.group(1), match.group(0))),
                      " ".join(rule.__doc__.split()).rstrip("."))
    if name == "non_empty":
        return "not empty"
    # an inline lambda: its longest text is the message, the other texts the values it refuses
    texts = sorted((const for const in rule.__code__.co_consts if isinstance(const, str)), key=len)
    if not texts:
        return f"checked by {rule.__module__}.{rule.__qualname__}"
    return ", ".join(f"`{text}`" for text in texts[:-1]) + (": " if len(texts) > 1 else "") + texts[-1]


def _number(bound: float) -> str:
    """A bound as written, exactly: `0.1`, and `0.100000000001` for a bound just above it."""
    short = f"{bound:g}"
    return short if float(short) == bound else f"{bound:.12g}"


def fields(cls: type = Config, prefix: str = "") -> Iterator[Field]:
    """Every field of `cls` and of the sections under it, depth first, in declaration order."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        path, kind = f"{prefix}{item.name}", hints[item.name]
        if dataclasses.is_dataclass(kind):
            yield from fields(kind, f"{path}.")
            continue
        rules = tuple(describe_rule(rule) for rule in item.metadata.get("rules", ()))
        yield Field(path, _type_name(kind), _yaml(_default(item)), rules, item.metadata.get("doc", ""))
        if typing.get_origin(kind) is dict and dataclasses.is_dataclass(typing.get_args(kind)[1]):
            key = "<field>" if item.name == "space" else "<column>" if item.name == "columns" else "<name>"
            yield from fields(typing.get_args(kind)[1], f"{path}.{key}.")


def _message(node: ast.expr) -> str:
    """The text of a raised message, with `…` for what is filled in at run time."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "…" for part in node.values)
    return "…"


def cross_field_rules(cls: type) -> list[str]:
    """The messages a section's `check(config)` raises: the rules that involve more than one field."""
    check = getattr(cls, "check", None)
    if check is None:
        return []
    tree = ast.parse(textwrap.dedent(inspect.getsource(check)))
    messages = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args \
                and getattr(node.exc.func, "id", "") == "ConfigError":
            messages.append(_message(node.exc.args[0]))
    return messages


def _sections(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, type]]:
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if typing.get_origin(kind) is dict and dataclasses.is_dataclass(typing.get_args(kind)[1]):
            kind = typing.get_args(kind)[1]
        if dataclasses.is_dataclass(kind):
            yield f"{prefix}{item.name}", kind
            yield from _sections(kind, f"{prefix}{item.name}.")


def _cell(text: str) -> str:
    """Text for a table cell or list item: a pipe would end the cell, `<name>` would be read as HTML and two
    `*` as emphasis."""
    for character, escaped in (("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("*", "\\*"), ("\n", " ")):
        text = text.replace(character, escaped)
    return text


def _code(text: str) -> str:
    """Text for a code span in a table cell: only the pipe needs escaping."""
    return text.replace("|", "\\|")


def _table(rows: list[Field]) -> list[str]:
    lines = ["| field | type | default | rules | what it does |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        rules = "; ".join(row.rules) or ""
        lines.append(f"| `{_code(row.path)}` | {_cell(row.kind)} | `{_code(row.default)}` | {_cell(rules)} | "
                     f"{_cell(row.doc)} |")
    return lines


def markdown() -> str:
    """The reference as Markdown: a heading and a table per top-level section, then its cross-field rules."""
    every = list(fields())
    lines = []
    top = [row for row in every if "." not in row.path]
    if top:
        lines += ["## Top level", "", *_table(top), ""]
    for name, cls in ((item.name, typing.get_type_hints(Config)[item.name]) for item in dataclasses.fields(Config)):
        if not dataclasses.is_dataclass(cls):
            continue
        lines += [f"## `{name}`", ""]
        doc = (cls.__doc__ or "").strip()
        if doc and not doc.startswith(cls.__name__ + "("):  # a dataclass without a docstring gets its signature
            lines += [" ".join(doc.split()), ""]
        lines += [*_table([row for row in every if row.path.startswith(f"{name}.")]), ""]
        checks = [(path, rule) for path, section in [(name, cls), *_sections(cls, f"{name}.")]
                  for rule in cross_field_rules(section)]
        if checks:
            lines += ["Rules across fields, checked at load (the message each raises):", ""]
            lines += [f"- {_cell(rule)}" for _, rule in checks]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
