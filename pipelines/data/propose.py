"""Proposes an experiment config for a user's own data (`python -m pipelines init DATA`).

It tells the three kinds apart by their layout: a folder of class sub-folders of images (source
`image_folder`), a CSV file (a table, `csv`), or a folder of CSV files, one sensor recording each
(`sensor_csv`). Then it picks the fields that kind needs (the classes, the target or label column, group and
time columns, the image size and channels, the signal channels and window), each with the reason it was
chosen, and writes the config as YAML with every reason as a comment above its field. What it cannot tell
(which column of a table is the target, say) is never guessed: it stops with one line asking for that field.

Reads headers, a sample of images and the CSV text only: no TensorFlow, so it answers in a second or two.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.core.config import schema
from pipelines.core.errors import ConfigError, DataError, PipelineError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")  # sources.IMAGE_SUFFIXES (not imported: it loads LiteRT)
IMAGE_SIDES = (8, 16, 24, 32, 48, 64)  # canonical sides on offer: multiples of 4 that fit a microcontroller
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
SAMPLED_IMAGES = 64
MAX_RECORDINGS = 500  # recordings read to propose (every one is read by the pipeline itself)
WINDOW_SECONDS = 2.0
TARGET_NAMES = ("target", "label", "labels", "class", "classes", "y", "outcome", "category", "diagnosis", "result",
                "response")
LABEL_NAMES = (*TARGET_NAMES, "activity", "gesture", "movement", "state", "condition")
GROUP_NAMES = ("group", "subject", "patient", "user", "customer", "session", "participant", "person", "household",
               "family", "site", "device", "id")
TIME_NAMES = ("t", "ts", "time", "date", "datetime", "timestamp", "seconds", "secs", "sec")
DATA_KINDS = "a folder of class sub-folders of images, a CSV table, or a folder of sensor recording CSV files"


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


def _where(shown: str) -> str:
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
    kind = kind_of(data)
    if kind == "images":
        return _images(data, shown)
    if kind == "table":
        return _table(data, shown, target)
    return _recordings(data, shown, target, time_column, sampling_rate)


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
    if any(_image_files(folder) for folder in _subfolders(data)):
        return "images"
    if _csv_files(data):
        return "signals"
    if any(path.suffix.lower() in IMAGE_SUFFIXES for path in data.iterdir() if path.is_file()):
        raise DataError(f"{data}: images directly in the folder; put each class's images in a sub-folder of its own "
                        f"({data}/<class>/<image>), the folder name being the class")
    raise DataError(f"{data}: neither class sub-folders of images nor CSV files (init reads {DATA_KINDS})")


def _subfolders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and not path.name.startswith(".")
                  and path.suffix.lower() in IMAGE_SUFFIXES)


def _csv_files(folder: Path) -> list[Path]:  # as signals._csv_files reads a folder of recordings
    return sorted(path for path in folder.glob("*.csv") if not path.name.startswith("."))


def _normal(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _listed(counts: Counter | dict, limit: int = 8) -> str:
    items = [f"{name} {count}" for name, count in sorted(counts.items(), key=lambda item: str(item[0]))]
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# images


def _look(path: Path) -> tuple[int, int, bool] | None:
    """(width, height, whether it is grey) from the header and a thumbnail; None when it cannot be read."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.mode in GREY_MODES:
                return width, height, True
            image.draft("RGB", (64, 64))  # JPEG: decode at a fraction of the size
            small = image.convert("RGB")
            small.thumbnail((32, 32))
            pixels = np.asarray(small, dtype=np.int16)
            return width, height, int(np.abs(pixels - pixels[..., :1]).max()) <= 8
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _sample(files: dict[str, list[Path]], count: int) -> list[Path]:
    """Up to `count` files, spread evenly over the classes and over each class's files."""
    share = max(1, count // max(len(files), 1))
    return [paths[int(index)] for paths in files.values() if paths
            for index in np.unique(np.linspace(0, len(paths) - 1, min(share, len(paths))).round())]


def _images(folder: Path, shown: str) -> Proposal:
    files = {path.name: _image_files(path) for path in _subfolders(folder)}
    present = [name for name, paths in files.items() if paths]
    if len(present) < 2:
        raise DataError(f"{folder}: images in {len(present)} class folder ({', '.join(present)}); classification "
                        "needs at least two, one sub-folder per class")
    looks = [(path, _look(path)) for path in _sample({name: files[name] for name in present}, SAMPLED_IMAGES)]
    readable = [look for _, look in looks if look]
    if not readable:
        raise DataError(f"{looks[0][0]}: cannot be read as an image, nor can any of the {len(looks)} sampled files")
    widths, heights = int(np.median([look[0] for look in readable])), int(np.median([look[1] for look in readable]))
    short = int(np.median([min(look[:2]) for look in readable]))
    side = max([size for size in IMAGE_SIDES if size <= short] or [IMAGE_SIDES[0]])
    colour = sum(not look[2] for look in readable)
    channels = 3 if colour else 1
    counts = {name: len(files[name]) for name in present}
    choices = [
        Choice("data.source", "image_folder", "a folder of class sub-folders of images; the folder names are the "
               f"classes: {_listed(counts)} files"),
        Choice("data.path", shown, _where(shown)),
        Choice("data.image_size", side, f"the images are mostly {widths}x{heights} px (median of {len(readable)} "
               f"sampled; shorter side {short} px); {side} px is the largest side on offer "
               f"({', '.join(map(str, IMAGE_SIDES))}) that needs no upscaling; a larger side costs the device "
               "memory and time"),
        Choice("data.channels", channels, f"{colour} of {len(readable)} sampled images have colour: RGB" if colour
               else f"all {len(readable)} sampled images are grey: one channel (a third of the memory of RGB)"),
    ]
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        choices.append(Choice("data.classes", present, f"folder(s) {', '.join(empty)} hold no image: left out (a "
                              "class without items cannot be trained); name a class here to keep only some"))
    if channels == 3:
        choices.append(Choice("normalize.scope", "per_channel", "colour: one mean and spread per channel, fitted on "
                              "the training split"))
    choices.append(Choice("model.architecture", "small_cnn", "a small convolutional network sized for an edge "
                          "device; resnet or transfer (a pretrained backbone) may score higher at a larger cost"))
    unread = len(looks) - len(readable)
    found = (f"images, {len(present)} classes ({_listed(counts)} files), mostly {widths}x{heights} px "
             f"{'RGB' if channels == 3 else 'grey'}" + (f"; {unread} sampled file(s) unreadable (analyze lists "
                                                          "them, clean drops them)" if unread else ""))
    return Proposal("images", found, tuple(choices))


# tables


def _read_csv(path: Path) -> pd.DataFrame:
    """The file as stripped text cells; a file pandas cannot read is named with pandas' reason."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                        f"{error.start}); save it as UTF-8") from None
    except pd.errors.ParserError as error:
        raise DataError(f"{path}: {' '.join(str(error).split())}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty CSV file") from None
    if frame.empty:
        raise DataError(f"{path}: a header and no data rows")
    return frame.apply(lambda column: column.str.strip())


def _present(column: pd.Series) -> pd.Series:
    return column[~column.isin(config_module.DataConfig().missing_values)]


def _is_numeric(column: pd.Series) -> bool:
    present = _present(column)
    return bool(len(present)) and bool(pd.to_numeric(present, errors="coerce").notna().all())


def _is_datetime(column: pd.Series) -> bool:
    present = _present(column)
    if not len(present) or _is_numeric(column) or not present.str.contains(r"\d[-:/]\d", regex=True).all():
        return False
    return bool(pd.to_datetime(present, errors="coerce", format="ISO8601").notna().all())


def _time_named(name: str) -> bool:
    normal = _normal(name)
    return normal in TIME_NAMES or normal.endswith(("date", "time", "timestamp", "day")) or \
        normal.startswith(("date", "time"))


def _pick_target(path: Path, columns: list[str], target: str) -> str:
    if target:
        if target not in columns:
            raise DataError(f"{path}: no column '{target}' (columns: {', '.join(map(str, columns))})")
        return target
    named = [column for column in columns if _normal(column) in TARGET_NAMES]
    if len(named) == 1:
        return named[0]
    why = f"several are named like one: {', '.join(named)}" if named else \
        f"none is named {', '.join(TARGET_NAMES[:7])} or the like"
    raise DataError(f"{path}: cannot tell the target column ({why}); name it: --target COLUMN (columns: "
                    f"{', '.join(map(str, columns))})")


def _table(path: Path, shown: str, target: str) -> Proposal:
    frame = _read_csv(path)
    columns = list(frame.columns)
    given = bool(target)
    target = _pick_target(path, columns, target)
    values = _present(frame[target])
    distinct = values.nunique()
    if distinct < 2:
        single = values.iloc[0] if len(values) else ""
        raise DataError(f"{path}: target column '{target}' holds a single value {single!r}; name another: --target "
                        "COLUMN")
    regression = _is_numeric(frame[target]) and distinct > 20
    choices = [Choice("data.source", "csv", "a CSV file: a table, one row per item"),
               Choice("data.path", shown, _where(shown)),
               Choice("data.target", target, "as given (--target)" if given else "the one column named like a target "
                      "(--target COLUMN names another)")]
    if regression:
        choices.append(Choice("data.task", "regression", f"'{target}' holds {distinct} distinct numbers: a quantity "
                              "to predict"))
    else:
        counts = Counter(values)
        choices.append(Choice("data.task", "classification", f"'{target}' holds {distinct} classes: "
                              f"{_listed(counts)} rows"))
    rest = [column for column in columns if column != target]
    rows = len(frame)
    times = [column for column in rest if (_time_named(column) and _is_numeric(frame[column])
                                           and frame[column].nunique() >= max(3, rows // 10))
             or _is_datetime(frame[column])]
    time = times[0] if times else ""
    ids = [column for column in rest if column != time and (_normal(column) in GROUP_NAMES or re.search(
        r"(^|[_\-\s.])id$", column, re.I) or re.search(r"[a-z](Id|ID)$", column))]
    groups = [column for column in ids if 2 <= frame[column].nunique() < rows]
    unique = [column for column in ids if frame[column].nunique() == rows]
    if groups:
        column = groups[0]
        choices.append(Choice("data.group_column", column, f"'{column}' names an entity and repeats "
                              f"({frame[column].nunique()} values over {rows} rows); it is not a feature"))
    elif unique:
        choices.append(Choice("data.group_column", unique[0], f"'{unique[0]}' is unique per row, a row id: named "
                              "here it stays out of the features (each row is its own group)"))
    if time:
        choices.append(Choice("data.time_column", time, f"'{time}' orders the rows in time"
                              + (f" (also time-like: {', '.join(times[1:])})" if len(times) > 1 else "")))
        choices.append(Choice("split.strategy", "temporal", "the latest rows are the test split, as a deployed "
                              "model meets the future; stratified (with no time_column) would mix the times"))
    elif groups:
        choices.append(Choice("split.group", "column", f"the rows of one '{groups[0]}' stay in one split, so the "
                              f"test never meets a {groups[0]} seen in training"))
    choices.append(Choice("model.architecture", "mlp", "tables are read by the multilayer perceptron"))
    numeric = sum(_is_numeric(frame[column]) for column in rest)
    found = (f"a table, {rows} rows and {len(columns)} columns ({numeric} numeric, {len(rest) - numeric} other "
             f"besides the target); {'regression' if regression else 'classification'} of '{target}'")
    return Proposal("table", found, tuple(choices))


# sensor recordings


def _seconds(column: pd.Series) -> np.ndarray | None:
    """A time column in seconds (numbers as they are, date-times since the first), or None when it is neither."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(dtype=np.float64)
    stamps = pd.to_datetime(column, errors="coerce", format="ISO8601")
    return None if stamps.isna().any() else (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy()


def _increasing(frames: dict[Path, pd.DataFrame], column: str) -> bool:
    for frame in frames.values():
        seconds = _seconds(frame[column])
        if seconds is None or len(seconds) < 2 or np.any(np.diff(seconds) <= 0):
            return False
    return True


def _pick_label(folder: Path, frames: dict[Path, pd.DataFrame], columns: list[str], target: str) -> str:
    if target:
        if target not in columns:
            raise DataError(f"{folder}: no column '{target}' in every recording (columns: {', '.join(columns)})")
        for file, frame in frames.items():
            changed = np.flatnonzero(frame[target].to_numpy() != frame[target].iloc[0])
            if len(changed):
                raise DataError(f"{file}: line {changed[0] + 2}, column '{target}': the label changes within the "
                                "recording; a recording's label must be the same on every row")
        return target
    labelled = [column for column in columns if all(frame[column].nunique() == 1 for frame in frames.values())
                and len({frame[column].iloc[0] for frame in frames.values()}) >= 2]
    for pool in ([column for column in labelled if _normal(column) in LABEL_NAMES],
                 [column for column in labelled if not _is_numeric(pd.concat([f[column] for f in frames.values()]))],
                 labelled):
        if len(pool) == 1:
            return pool[0]
        if pool:
            raise DataError(f"{folder}: cannot tell which column labels the recordings ({', '.join(pool)} each hold "
                            "one value per file); name it: --target COLUMN")
    raise DataError(f"{folder}: cannot tell which column labels the recordings (none holds one value per file that "
                    f"differs between files); name it: --target COLUMN (columns: {', '.join(columns)})")


def _pick_time(folder: Path, frames: dict[Path, pd.DataFrame], columns: list[str], time_column: str,
               sampling_rate: float) -> str:
    if time_column:
        if time_column not in columns:
            raise DataError(f"{folder}: no column '{time_column}' in every recording (columns: {', '.join(columns)})")
        if not _increasing(frames, time_column):
            raise DataError(f"{folder}: column '{time_column}' is not numbers or date-times increasing within "
                            "every recording")
        return time_column
    increasing = [column for column in columns if _increasing(frames, column)]
    named = [column for column in increasing if _time_named(column)]
    if named or len(increasing) == 1:
        return (named or increasing)[0]
    if sampling_rate:
        return ""
    found = f" ({', '.join(increasing)} all increase)" if increasing else ""
    raise DataError(f"{folder}: no time column to measure the sampling rate from{found}; give the rate: "
                    "--sampling-rate HZ, or name the time column: --time COLUMN")


def _window(rate: float, shortest: int) -> int:
    """About WINDOW_SECONDS of samples, a multiple of 4, that every recording holds (at least twice when long)."""
    window = min(int(round(WINDOW_SECONDS * rate)), shortest)
    if shortest // 2 >= 16:
        window = min(window, shortest // 2)
    return max(4, window - window % 4)


def _recordings(folder: Path, shown: str, target: str, time_column: str, sampling_rate: float) -> Proposal:
    files = _csv_files(folder)
    frames = {file: _read_csv(file) for file in files[:MAX_RECORDINGS]}
    first = next(iter(frames.values()))
    columns = [str(column) for column in first.columns if all(column in frame for frame in frames.values())]
    label = _pick_label(folder, frames, columns, target)
    time = _pick_time(folder, frames, columns, time_column, sampling_rate)
    numeric = [column for column in columns if column not in (label, time)
               and all(_is_numeric(frame[column]) for frame in frames.values())]
    meta = [column for column in numeric if all(frame[column].nunique() == 1 for frame in frames.values())]
    clocks = [column for column in numeric if column not in meta and _increasing(frames, column)]
    channels = [column for column in numeric if column not in meta + clocks]
    if not channels:
        raise DataError(f"{folder}: no numeric channel column that varies within a recording (columns: "
                        f"{', '.join(columns)})")
    lengths = [len(frame) for frame in frames.values()]
    if sampling_rate:
        rate = float(sampling_rate)
    else:  # as signals._measured_rate: all steps over all the time they span
        spans = [np.ptp(_seconds(frame[time])) for frame in frames.values()]
        rate = float(sum(length - 1 for length in lengths) / max(sum(spans), 1e-12))
    window = _window(rate, min(lengths))
    left_out = meta + clocks
    choices = [
        Choice("data.source", "sensor_csv", "a folder of CSV files, one sensor recording each"),
        Choice("data.path", shown, _where(shown)),
        Choice("data.target", label, "as given (--target)" if target else f"'{label}' holds one value per recording "
               "(the class); --target COLUMN names another"),
        Choice("data.signal_channels", channels, "the numeric columns that vary within a recording, in file order "
               "(the device feeds them in this order)" + (f"; left out: {', '.join(left_out)} (constant within "
                                                           "each recording, or increasing like a clock)"
                                                           if left_out else "")),
    ]
    if time:
        choices.append(Choice("data.time_column", time, "as given (--time)" if time_column else "increases within "
                              "every recording" + ("" if sampling_rate else f": about {rate:.4g} samples per second "
                                                   "if it counts seconds (date-times are read as such)")))
    if sampling_rate:
        choices.append(Choice("data.sampling_rate", rate, "samples per second, as given (--sampling-rate)"))
    choices += [
        Choice("data.window", window, f"about {window / rate:.3g} s at {rate:.4g} Hz; the shortest recording has "
               f"{min(lengths)} samples, and every recording must hold a window"),
        Choice("data.stride", max(1, window // 2), "windows overlap by half: more training windows; the windows of "
               "one recording never cross splits"),
        Choice("model.architecture", "cnn1d", "a small 1-D convolutional network over each window; recurrent (an "
               "LSTM) is the other choice"),
    ]
    counts = Counter(frame[label].iloc[0] for frame in frames.values())
    read = f" (the first {len(frames)} read)" if len(files) > len(frames) else ""
    sizes = f"{min(lengths)} samples each" if min(lengths) == max(lengths) else \
        f"{min(lengths)} to {max(lengths)} samples"
    found = (f"sensor recordings, {len(files)} CSV files{read} of {sizes}, "
             f"{len(channels)} channels, {len(counts)} classes ({_listed(counts)} recordings)")
    return Proposal("signals", found, tuple(choices))


# the config file


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
