"""Data sources read into one of three representations: images, a table, or sensor recordings.

- embedded: datasets that ship inside scikit-learn (digits as images; breast_cancer and wine as
  classification tables; diabetes as a regression table);
- image folder: one sub-folder per class (`image_dataset_from_directory`'s convention), PNG, JPEG, BMP, GIF,
  any size and mode;
- CSV: a named target column, numeric and categorical features, optional group and time columns;
- sensor recordings (see pipelines/data/signals.py): BasicMotions embedded, or a user's sensor CSV files.
Raw data is only read, never modified. Problems that make a file unusable are recorded per item (analyze
reports them, clean drops and logs them); problems that make the whole source unusable raise `DataError`
naming the file, row or column.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import deploy.edge.predict as edge
from pipelines.core import config as config_module
from pipelines.core.errors import DataError
from pipelines.data import given, signals

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class ImageSequence:
    """Images read on demand, one at a time: `sequence[i]` decodes item i (None when it cannot be read), so a
    folder of any size is never held in memory. Items are files, or rows of an array (embedded data)."""

    def __init__(self, paths: list[Path] | None = None, pixels: np.ndarray | None = None):
        self.paths, self.pixels = paths, pixels

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.pixels)

    def load(self, index: int) -> tuple[Image.Image | None, str | None]:
        """(image, None), or (None, why it cannot be read)."""
        if self.paths is None:
            return Image.fromarray(self.pixels[index]), None
        path = self.paths[index]
        image, problem = _open_image(path)
        if problem and path.suffix.lower() not in IMAGE_SUFFIXES:
            problem = f"not an image file ({path.suffix or 'no suffix'}): {problem}"
        return image, problem

    def __getitem__(self, index: int) -> Image.Image | None:
        return self.load(int(index))[0]

    def subset(self, indices) -> ImageSequence:
        if self.paths is None:
            return ImageSequence(pixels=self.pixels[np.asarray(indices, dtype=int)])
        return ImageSequence(paths=[self.paths[index] for index in indices])


@dataclasses.dataclass
class RawImages:
    images: ImageSequence  # decoded on demand; `scan` is the one pass that reads them all
    labels: np.ndarray  # (N,) int
    class_names: tuple[str, ...]
    ids: tuple[str, ...]
    value_max: float  # the value that maps to 255 in the canonical uint8 form
    origin: str
    problems: dict[int, str] = dataclasses.field(default_factory=dict)  # index -> why unreadable (after scan)
    kind: str = "images"
    given_split: np.ndarray | None = None  # the dataset's own split per item (train, val, test), when asked
    task: str = "classification"


@dataclasses.dataclass
class RawTable:
    features: pd.DataFrame  # one row per item, the target and id/group/time columns excluded
    target: pd.Series
    ids: tuple[str, ...]
    task: str
    origin: str
    class_names: tuple[str, ...] = ()
    groups: pd.Series | None = None
    times: pd.Series | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    missing_tokens: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # column -> token -> count
    quarantined: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)  # (line, fields, text) skipped
    kind: str = "table"
    given_split: np.ndarray | None = None  # the dataset's own split per row (train, val, test), when asked


def pixel_hash(image: Image.Image) -> str:
    """Content hash of the decoded pixels, mode and size: a re-saved PNG is the same content."""
    digest = hashlib.sha256(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def to_canonical(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """Any PIL image -> uint8 (size, size, channels), by the edge predictor's own function, so the device
    prepares a photograph exactly as training saw it."""
    return edge.canonical_image(image, (size, size), channels)


def conversion_rules(image: Image.Image) -> list[str]:
    """The rules `to_canonical` applies to this image beyond resizing, in words, for the cleaning log."""
    rules = []
    if image.getexif().get(0x0112, 1) != 1:  # the EXIF orientation tag
        rules.append(f"EXIF orientation {image.getexif()[0x0112]} applied")
    if image.mode.startswith("I;16"):
        rules.append("16-bit scaled to 8 bits (x 255/65535)")
    elif image.mode in ("I", "F"):
        rules.append(f"{image.mode} (32-bit) scaled to 8 bits by its range")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rules.append("transparency composited on black")
    if image.mode == "CMYK":
        rules.append("CMYK converted to RGB")
    return rules


def _digits() -> RawImages:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # The 0-16 grey levels are stored as 8-bit pixels scaled to 0-255, the form every other image source has.
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return RawImages(
        images=ImageSequence(pixels=pixels),
        labels=bunch.target.astype(np.int64),
        class_names=tuple(str(name) for name in bunch.target_names),
        ids=tuple(f"digits-{index:04d}" for index in range(len(pixels))),
        value_max=255.0,
        origin="sklearn.datasets.load_digits (8x8 grey levels 0-16, shipped inside scikit-learn)",
    )


def _open_image(path: Path) -> tuple[Image.Image | None, str | None]:
    try:
        with Image.open(path) as image:
            image.load()  # decodes now: a truncated file fails here, not later
            return image.copy(), None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return None, f"{type(error).__name__}: {error}"


def check_class_names(names, where: str) -> None:
    """A class name is one line of labels.txt and a C string in a microcontroller bundle: no control characters.

    Raises:
        DataError: naming the class.
    """
    for name in names:
        if any(ord(character) < 32 or ord(character) == 127 for character in str(name)):
            raise DataError(f"{where} {str(name)!r}: a class name may not hold a control character (newline, tab, "
                            "...); rename it")


def _image_folder_split(root: Path) -> RawImages:
    """An image folder split by its own sub-folders: `train/`, `val/` (optional) and `test/`, each holding one
    sub-folder per class; ids keep the split's folder (`train/cat/1.png`)."""
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    present = sorted(path.name for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    other = [name for name in present if name not in given.SUB_FOLDERS]
    if other or not {"train", "test"} <= set(present):
        raise DataError(f"{root}: split.strategy predefined needs train/ and test/ sub-folders (val/ optional), "
                        f"each with one folder per class; found {present}" + (f" ({other[0]!r} is not a split)"
                                                                            if other else ""))
    parts = {name: _image_folder(root / name) for name in given.SUB_FOLDERS if name in present}
    classes = sorted({name for part in parts.values() for name in part.class_names})
    paths, labels, ids, split = [], [], [], []
    for name, part in parts.items():
        paths += part.images.paths
        labels += [classes.index(part.class_names[label]) for label in part.labels]
        ids += [f"{name}/{item}" for item in part.ids]
        split += [name] * len(part.ids)
    return RawImages(ImageSequence(paths=paths), np.array(labels, dtype=np.int64), tuple(classes), tuple(ids),
                     255.0, f"image folder {root} (its own train/val/test sub-folders)",
                     given_split=np.array(split, dtype=str))


def _image_folder(root: Path) -> RawImages:
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    classes = sorted(path.name for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders (expected one folder per class, as in "
                         "image_dataset_from_directory)")
    check_class_names(classes, f"{root}: class folder")
    files = [(label, path) for label, name in enumerate(classes) for path in sorted((root / name).rglob("*"))
             if path.is_file() and not path.name.startswith(".")]
    inside = root.resolve()
    outside = [path for _, path in files if not path.resolve().is_relative_to(inside)]
    if outside:
        raise DataError(f"{outside[0]}: a link to {outside[0].resolve()}, outside the image folder {root}; copy the "
                        f"file in or remove the link ({len(outside)} such link(s))")
    return RawImages(ImageSequence(paths=[path for _, path in files]),
                     np.array([label for label, _ in files], dtype=np.int64), tuple(classes),
                     tuple(str(path.relative_to(root)) for _, path in files), 255.0, f"image folder {root}")


def scan(raw: RawImages, desc: str, workers: int = 2) -> Iterator[tuple[int, Image.Image]]:
    """The one pass over the images: yields (index, decoded image) in order for every readable item and
    records the others in `raw.problems`. Files are decoded by `workers` threads (Pillow releases the GIL
    while decoding), a chunk at a time, so memory holds one chunk, not the dataset; a progress bar shows
    images per second."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    count, chunk = len(raw.images), 64
    with ThreadPoolExecutor(workers) as pool, tqdm(total=count, desc=desc, unit="img",
                                                   disable=count < 2000) as progress:
        for start in range(0, count, chunk):
            indices = range(start, min(start + chunk, count))
            for index, (image, problem) in zip(indices, pool.map(raw.images.load, indices)):
                if problem:
                    raw.problems[index] = problem
                else:
                    yield index, image
            progress.update(len(indices))


def _embedded_table(name: str) -> RawTable:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    task = "regression" if name == "diabetes" else "classification"
    target = bunch.target
    class_names = tuple(str(item) for item in bunch.target_names) if task == "classification" else ()
    ids = tuple(f"{name}-{index:04d}" for index in range(len(target)))
    return RawTable(bunch.data.reset_index(drop=True), target.reset_index(drop=True), ids, task,
                    f"sklearn.datasets.load_{name} (shipped inside scikit-learn)", class_names)


def _coerce_numeric_text(frame: pd.DataFrame, path: Path, warnings: list[str], lines: list[int]) -> pd.DataFrame:
    """A column that is numeric but for a few text cells: those cells become missing, each one named."""
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]):
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce")
        present = frame[column].notna()
        bad = present & numbers.isna()
        if present.sum() and bad.sum() and bad.sum() <= 0.1 * present.sum():
            for row in np.flatnonzero(bad.to_numpy())[:20]:
                warnings.append(f"{path}: row {lines[row]}, column '{column}': text {frame[column].iloc[row]!r} "
                                "in a numeric column, read as missing")
            frame[column] = numbers
    return frame


def _record_lines(path: Path, skip_bad: bool = False) -> tuple[list[int], list[tuple[int, int, str]]]:
    """The line on which each data record starts (the header is line 1): a quoted cell may hold newlines, so a
    record's line is not its index + 2. Checks on the way that the file is text, that no header name repeats, and
    that every row has as many fields as the header (pandas would pad a short row with missing values); with
    `skip_bad` such a row is set aside as (line, fields, its text) instead of stopping."""
    import csv

    with open(path, "rb") as stream:
        if b"\0" in stream.read(1 << 16):
            raise DataError(f"{path}: not a text CSV file (it holds NUL bytes)")
    with open(path, newline="", encoding="utf-8", errors="replace") as stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty CSV file")
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise DataError(f"{path}: column name(s) {repeated} appear more than once in the header")
        lines, bad, end = [], [], reader.line_num
        for row in reader:
            if row and len(row) != len(header):
                if not skip_bad:
                    raise DataError(f"{path}: line {end + 1} has {len(row)} fields, the header has {len(header)} "
                                    "(data.bad_lines: skip sets such lines aside)")
                bad.append((end + 1, len(row), ",".join(row)))
            elif row:
                lines.append(end + 1)
            end = reader.line_num
    if not lines:
        raise DataError(f"{path}: no data rows, only the header")
    return lines, bad


def _good_records(path: Path, bad: list[tuple[int, int, str]]):
    """The CSV text without its set-aside lines, for pandas (a file object)."""
    import csv
    import io

    skipped, out = {line for line, _, _ in bad}, io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        end = 0
        for row in reader:
            if row and end + 1 not in skipped:
                writer.writerow(row)
            end = reader.line_num
    out.seek(0)
    return out


def _typed(text: pd.DataFrame, missing: tuple[str, ...]) -> pd.DataFrame:
    """The text cells as typed columns: missing tokens become NaN; a column whose present cells all parse as
    numbers becomes numeric (int64, or float64 with missing values), as `pd.read_csv` would infer it."""
    frame = text.mask(text.isin(list(missing)))
    for column in frame.columns:
        try:
            frame[column] = pd.to_numeric(frame[column])
        except (ValueError, TypeError):
            pass
    return frame


def _csv(path: Path, data: config_module.DataConfig, split_column: str = "") -> RawTable:
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found")
    lines, bad = _record_lines(path, data.bad_lines == "skip")
    try:  # read once, as text; the dtypes follow from it (numbers where every present cell is one)
        text = pd.read_csv(_good_records(path, bad) if bad else path, dtype=str, keep_default_na=False)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
                        "save it as UTF-8") from None
    except pd.errors.ParserError as error:  # e.g. "Expected 4 fields in line 7, saw 5"
        raise DataError(f"{path}: {error}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty CSV file") from None
    frame = _typed(text, data.missing_values)
    if len(lines) != len(frame):  # a row pandas reads otherwise than the csv module: number rows by position
        lines = [index + 2 for index in range(len(frame))]
    for column in (data.target, data.group_column, data.time_column, split_column):
        if column and column not in frame.columns:
            raise DataError(f"{path}: no column '{column}' (columns: {', '.join(map(str, frame.columns))})")
    given_split = np.array([given.name(value, f"{path}: line {line}, column '{split_column}'")
                            for value, line in zip(text[split_column], lines)], dtype=str) if split_column else None
    warnings: list[str] = []
    frame = _coerce_numeric_text(frame, path, warnings, lines)
    numeric = frame.select_dtypes("number")
    infinite = np.isinf(numeric.to_numpy(dtype=float))
    for row, column in zip(*np.nonzero(infinite)):
        warnings.append(f"{path}: row {lines[row]}, column '{numeric.columns[column]}': infinite value, read as "
                        "missing")
    frame[numeric.columns] = numeric.replace([np.inf, -np.inf], np.nan)
    target = frame[data.target]
    task = data.task
    if task == "auto":
        task = "regression" if pd.api.types.is_float_dtype(target) and target.nunique() > 20 else "classification"
    if target.isna().any():
        raise DataError(f"{path}: target column '{data.target}' is missing in rows "
                         f"{[lines[row] for row in np.flatnonzero(target.isna().to_numpy())[:10]]}")
    class_names: tuple[str, ...] = ()
    if task == "classification":
        class_names = tuple(str(item) for item in sorted(target.unique(), key=str))
        check_class_names(class_names, f"{path}: target column '{data.target}' class")
        if len(class_names) < 2:
            raise DataError(f"{path}: target column '{data.target}' has a single class {class_names}")
        target = target.map({value: index for index, value in enumerate(sorted(target.unique(), key=str))})
    elif not pd.api.types.is_numeric_dtype(target):
        raise DataError(f"{path}: regression target '{data.target}' is not numeric")
    excluded = [column for column in (data.target, data.group_column, data.time_column, split_column) if column]
    tokens = {column: {token: int(count) for token, count in text[column].value_counts().items()
                       if token in data.missing_values} for column in text.columns}
    # Rows are named by the line in the file where they start (the header is line 1), in every report and log.
    return RawTable(frame.drop(columns=excluded), target.reset_index(drop=True),
                    tuple(f"row-{line}" for line in lines), task, f"CSV file {path}",
                    class_names, frame[data.group_column] if data.group_column else None,
                    frame[data.time_column] if data.time_column else None, warnings,
                    {column: found for column, found in tokens.items() if found}, quarantined=bad,
                    given_split=given_split)


def _signals(data: config_module.DataConfig, root: Path,
             split: config_module.SplitConfig | None = None) -> signals.Recordings:
    predefined = split is not None and split.strategy == "predefined"
    if data.source != "sensor_csv":
        recordings = signals.load_embedded(data.source)
        return recordings if predefined else dataclasses.replace(recordings, given_split=None)
    return signals.load_csv(Path(root) / data.path, data.signal_channels, data.window,
                            time_column=data.time_column or None, recording_column=data.recording_column or None,
                            label_column=data.target, sampling_rate_hz=data.sampling_rate or None,
                            missing_values=data.missing_values, short_recordings=data.short_recordings,
                            split_column=split.column if predefined and not split.file else None,
                            split_file=Path(root) / split.file if predefined and split.file else None)


def _read(data: config_module.DataConfig, root: Path,
          split: config_module.SplitConfig | None = None) -> RawImages | RawTable | signals.Recordings:
    predefined = split is not None and split.strategy == "predefined"
    if data.is_signal:
        return _signals(data, root, split)
    if data.source == "digits":
        return _digits()
    if data.source == "image_folder":
        return (_image_folder_split if predefined else _image_folder)(Path(root) / data.path)
    if data.source == "csv":
        return _csv(Path(root) / data.path, data, split.column if predefined else "")
    return _embedded_table(data.source)


def keep_classes(raw: RawImages | RawTable, names: tuple[str, ...]) -> RawImages | RawTable:
    """Only the named classes, renumbered 0..k-1 in the given order."""
    unknown = sorted(set(names) - set(raw.class_names))
    if unknown:
        raise DataError(f"data.classes: {unknown} are not classes of {raw.origin} ({list(raw.class_names)})")
    mapping = {raw.class_names.index(name): new for new, name in enumerate(names)}
    labels = np.asarray(raw.target if isinstance(raw, RawTable) else raw.labels)
    keep = np.flatnonzero(np.isin(labels, list(mapping)))
    renumbered = np.array([mapping[label] for label in labels[keep]], dtype=np.int64)
    ids = tuple(raw.ids[index] for index in keep)
    given_split = None if raw.given_split is None else raw.given_split[keep]
    if isinstance(raw, RawImages):
        problems = {position: raw.problems[index] for position, index in enumerate(keep) if index in raw.problems}
        return dataclasses.replace(raw, images=raw.images.subset(keep), labels=renumbered, ids=ids,
                                   class_names=tuple(names), problems=problems, given_split=given_split)
    pick = lambda series: None if series is None else series.iloc[keep].reset_index(drop=True)  # noqa: E731
    return dataclasses.replace(raw, features=raw.features.iloc[keep].reset_index(drop=True),
                               target=pd.Series(renumbered), ids=ids, class_names=tuple(names),
                               groups=pick(raw.groups), times=pick(raw.times), given_split=given_split)


def load(data: config_module.DataConfig, root: Path,
         split: config_module.SplitConfig | None = None) -> RawImages | RawTable:
    """Reads the configured source (only `data.classes` when given), with the dataset's own split per item
    (`given_split`) when `split.strategy` is predefined.

    Raises:
        DataError: the source as a whole is unusable; the message names the file, row or column.
    """
    raw = _read(data, root, split)
    if isinstance(raw, signals.Recordings):
        if data.short_recordings == "error":
            signals.check_lengths(raw, data.window)  # a recording shorter than one window stops here, named
        return raw
    raw = keep_classes(raw, data.classes) if data.classes else raw
    check_present(raw)
    return raw


def check_present(raw: RawImages | RawTable) -> None:
    """At least two classes with readable items (before `scan`, with any file; after it, with readable ones).

    Raises:
        DataError: naming the classes that have items.
    """
    if raw.task == "classification":
        present = [name for name in raw.class_names if name not in empty_classes(raw)]
        if len(present) < 2:
            raise DataError(f"{raw.origin}: {len(present)} class(es) with readable items ({', '.join(present)}); "
                            "classification needs at least two")


def empty_classes(raw: RawImages | RawTable) -> list[str]:
    """Classes without one readable item (an empty class folder, say)."""
    labels = np.asarray(raw.labels if isinstance(raw, RawImages) else raw.target)
    readable = np.ones(len(labels), bool)
    if isinstance(raw, RawImages):
        readable[list(raw.problems)] = False
    counts = np.bincount(labels[readable], minlength=len(raw.class_names))
    return [name for name, count in zip(raw.class_names, counts) if not count]


def require_every_class(raw: RawImages | RawTable) -> None:
    """Stops before the data is cleaned or split when a class has no readable item: its label would exist in
    the model's head but never in the data.

    Raises:
        DataError: naming the empty classes and how to leave them out.
    """
    empty = empty_classes(raw)
    if empty:
        raise DataError(f"{raw.origin}: class(es) {', '.join(empty)} have no readable item; remove "
                        "them or leave them out with data.classes (the classes to keep)")


def folder_fingerprint(folder: Path) -> str:
    """Changes whenever a file under `folder` is added, removed or rewritten (names, sizes and times; no reads)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def fingerprint(data: config_module.DataConfig, root: Path) -> str:
    """Changes whenever the raw input changes: file list, sizes and times for a folder, bytes for a CSV."""
    digest = hashlib.sha256(data.source.encode())
    if data.source == "image_folder":
        digest.update(folder_fingerprint(Path(root) / data.path).encode())
    elif data.source in ("csv", "sensor_csv") and (Path(root) / data.path).is_file():
        digest.update((Path(root) / data.path).read_bytes())
    elif data.source == "sensor_csv":
        digest.update(folder_fingerprint(Path(root) / data.path).encode())
    elif data.is_signal:
        import importlib.metadata

        signals.aeon_data_folder()  # the embedded files, by the version of the package they ship in
        digest.update(importlib.metadata.version("aeon").encode())
    else:
        import sklearn

        digest.update(sklearn.__version__.encode())  # the embedded data ship with the package
    return digest.hexdigest()
