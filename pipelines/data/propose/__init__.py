"""Proposes an experiment config for a user's own data (`python -m pipelines init DATA`).

It tells the three kinds apart by their layout: a folder of class sub-folders of images (source
`image_folder`), a CSV file (a table, `csv`), or a folder of CSV files, one sensor recording each
(`sensor_csv`). Then it picks the fields that kind needs (the classes, the target or label column, group and
time columns, the image size and channels, the signal channels and window), each with the reason it was
chosen, and writes the config as YAML with every reason as a comment above its field. What it cannot tell
(which column of a table is the target, say) is never guessed: it stops with one line asking for that field.

Reads headers, a sample of images and the CSV text only: no TensorFlow, so it answers in a second or two.
One module per kind (`images`, `tables`, `recordings`); what they share (the proposal, the CSV column tests in
`columns`) and the config file's rendering live here.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.core.config import schema
from pipelines.core.errors import ConfigError, DataError, PipelineError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")  # sources.IMAGE_SUFFIXES (not imported: it loads LiteRT)
DATA_KINDS = "a folder of class sub-folders of images, a CSV table, or a folder of sensor recording CSV files"
MODULES = {"images": "images", "table": "tables", "signals": "recordings"}  # kind -> the module proposing it


@dataclasses.dataclass(frozen=True)
class Choice:
    """One proposed field: its dotted config path, its value, and why (the comment above it in the YAML)."""

    key: str
    value: Any
    why: str


@dataclasses.dataclass(frozen=True)
class Proposal:
    """What `propose` found in the data (`found`, one line) and the fields it chose, in the order written."""

    kind: str  # images, table or signals (pipelines/data/kinds)
    found: str
    choices: tuple[Choice, ...]

    def value(self, key: str, default: Any = None) -> Any:
        return next((choice.value for choice in self.choices if choice.key == key), default)

    def values(self) -> dict:
        """The choices as the nested mapping a config file holds."""
        tree: dict = {}
        for choice in self.choices:
            section, field = choice.key.split(".", 1)
            tree.setdefault(section, {})[field] = choice.value
        return tree


def default_name(data: Path) -> str:
    """The config's (and so the experiment's) name: the data's stem as a plain name (`flowers`, `customers`)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data).resolve().stem).strip("._") or "data"
    return name[: schema.NAME_LENGTH]


def config_path(data: Path, root: Path) -> str:
    """`data.path` as the config holds it: relative to `root` (runtime.root) when inside it, else absolute."""
    resolved = Path(data).resolve()
    try:
        return resolved.relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(resolved)


def where(shown: str) -> str:
    """Why `data.path` reads as it does."""
    if Path(shown).is_absolute():
        return "absolute: the data lies outside the folder init ran from (runtime.root's default)"
    return "relative to runtime.root (by default the folder you run from)"


def propose(data: Path, shown: str, target: str = "", time_column: str = "", sampling_rate: float = 0.0
            ) -> Proposal:
    """The config fields for `data`, each with its reason.

    Args:
        data: the folder or file as given.
        shown: `data.path` as the config should hold it (`config_path`).
        target: the table's target or the recordings' label column, when the data cannot tell it.
        time_column: the recordings' time column, when the data cannot tell it.
        sampling_rate: the recordings' samples per second, when they have no time column.

    Raises:
        DataError: the data is none of the three kinds, or a field cannot be told; the message names the file
            and the option that gives the field (e.g. `--target COLUMN`).
    """
    data = Path(data)
    module = importlib.import_module(f"{__name__}.{MODULES[kind_of(data)]}")
    return module.propose(data, shown, target=target, time_column=time_column, sampling_rate=sampling_rate)


def kind_of(data: Path) -> str:
    """images, table or signals, by the layout of `data`.

    Raises:
        DataError: `data` is missing or none of the three layouts.
    """
    if not data.exists():
        raise DataError(f"{data}: not found (init reads {DATA_KINDS})")
    if data.is_file():
        if data.suffix.lower() == ".csv":
            return "table"
        if data.suffix.lower() in IMAGE_SUFFIXES:
            raise DataError(f"{data}: a single image; init reads a folder with one sub-folder of images per class")
        raise DataError(f"{data}: not a CSV file (init reads {DATA_KINDS})")
    if any(image_files(folder) for folder in subfolders(data)):
        return "images"
    if csv_files(data):
        return "signals"
    if any(path.suffix.lower() in IMAGE_SUFFIXES for path in data.iterdir() if path.is_file()):
        raise DataError(f"{data}: images directly in the folder; put each class's images in a sub-folder of its own "
                        f"({data}/<class>/<image>), the folder name being the class")
    raise DataError(f"{data}: neither class sub-folders of images nor CSV files (init reads {DATA_KINDS})")


def subfolders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and not path.name.startswith(".")
                  and path.suffix.lower() in IMAGE_SUFFIXES)


def csv_files(folder: Path) -> list[Path]:  # as signals._csv_files reads a folder of recordings
    return sorted(path for path in folder.glob("*.csv") if not path.name.startswith("."))


def listed(counts: Counter | dict, limit: int = 8) -> str:
    items = [f"{name} {count}" for name, count in sorted(counts.items(), key=lambda item: str(item[0]))]
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")




def flow(value: Any) -> str:
    """A value as one line of YAML (flow style), quoted only where YAML needs it."""
    text = yaml.safe_dump([value], default_flow_style=True, width=1 << 30, allow_unicode=True).strip()
    return text[1:-1]


def render(proposal: Proposal, name: str, data_argument: str) -> str:
    """The config file: a header naming the data and the next command, then each field under its reason."""
    lines = [f"# {name}: {proposal.found}.",
             f"# Proposed by `python -m pipelines init {data_argument}`; each field says why it was chosen. Edit any",
             "# of them (python -m pipelines all --help lists every field); the experiment takes this file's name.",
             f"# Run it: make pipeline CONFIG=configs/{name}.yaml"]
    for section, fields in proposal.values().items():
        lines.append(f"{section}:")
        for field in fields:
            why = next(choice.why for choice in proposal.choices if choice.key == f"{section}.{field}")
            lines += [f"  # {line}" for line in textwrap.wrap(why, 110)]
            lines.append(f"  {field}: {flow(fields[field])}")
    return "\n".join(lines) + "\n"


def check_name(name: str) -> None:
    """Raises ConfigError when `name` cannot name an experiment (a config file's stem names it)."""
    problem = schema.plain_name(name)
    if problem:
        raise ConfigError(f"--name: {problem}")


def write(proposal: Proposal, path: Path, name: str, data_argument: str, force: bool = False) -> Path:
    """Writes the proposal as `path` (atomically), after loading it as the pipeline will.

    Raises:
        PipelineError: `path` exists and `force` is not set.
        ConfigError: the proposed config does not load (the message names the field).
    """
    path = Path(path)
    if path.exists() and not force:
        raise PipelineError(f"{path}: exists; edit it, pick another --name, or overwrite it with --force")
    check_name(name)
    text = render(proposal, name, data_argument)
    try:
        config_module.from_dict({"experiment": name, **schema.read_yaml(text)})
    except ConfigError as error:
        raise ConfigError(f"{path}: the proposed config does not load: {error}") from None
    return workspace.write_text(path, text)

