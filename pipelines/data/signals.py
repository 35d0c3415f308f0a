"""Sensor time series: recordings of several channels, cut into fixed-length windows for classification or
anomaly detection.

- embedded: BasicMotions (UEA, 80 recordings of a smart watch, 6 channels, 4 activities) and InternalBleeding16
  (UCR anomaly archive 135, one series with a labelled anomaly), read from the data files that ship
  inside the `aeon` wheel. aeon 1.6.0 pins numba<0.64 and pandas<3.1, which the project's numpy and pandas
  exclude, so it is installed with `pip install --no-deps aeon==1.6.0` and never imported: its folder is
  found with `importlib.util.find_spec` (which runs no package code) and the files are read here.
- CSV: a folder of CSV files (one recording each) or one long CSV with a recording-id column; a time column,
  channel columns, and a label per recording or per sample.

Windows, the analysis profile and the splits work on `Recordings`; splits never share a recording
(grouped) or a stretch of time (temporal) between train, val and test.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

import deploy.edge.predict as edge
from pipelines.core.errors import DataError
from pipelines.data import given

MISSING_VALUES = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")
# The UEA file names no dimensions; its description lists the 3-D accelerometer, then the 3-D gyroscope.
BASIC_MOTIONS_CHANNELS = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")


@dataclasses.dataclass
class Recordings:
    """Multichannel recordings; `labels` for classification, `sample_labels` (0 normal, 1 anomaly) for
    anomaly detection."""

    signals: list[np.ndarray]  # float32 (T_i, C) per recording; NaN marks a missing sample
    ids: tuple[str, ...]
    channels: tuple[str, ...]
    sampling_rate_hz: float
    origin: str
    labels: np.ndarray | None = None  # (R,) int, index into class_names
    sample_labels: list[np.ndarray] | None = None  # (T_i,) int8 per recording
    class_names: tuple[str, ...] = ()
    times: list[np.ndarray] | None = None  # (T_i,) seconds per recording, when the source has a time column
    files: tuple[str, ...] = ()  # the file each recording was read from
    given_split: tuple[str, ...] | None = None  # the dataset's own split per recording (train, val, test)

    @property
    def task(self) -> str:
        return "classification" if self.labels is not None else "anomaly"


class Windows(NamedTuple):
    x: np.ndarray  # (N, length, C) float32
    recording: np.ndarray  # (N,) index into the recordings
    start: np.ndarray  # (N,) first sample of the window in its recording
    label: np.ndarray  # (N,) class, or 1 for an anomalous window


def aeon_data_folder() -> Path:
    """The `datasets/data` folder of the installed aeon wheel, found without importing aeon.

    Raises:
        DataError: aeon is not installed.
    """
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded sensor datasets ship inside the aeon wheel, which is not installed: "
                        "pip install --no-deps aeon==1.6.0 (only its data files are used)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str], tuple[str, ...]]:
    """A UEA/sktime `.ts` file: header lines start with '@', then one case per line, channels separated by
    ':', values by ',' ('?' is missing), the class label last.

    Returns:
        (one float32 (T, C) array per case, each case's label, the classes the header declares, in its order).
    """
    cases, labels, classes, dimensions, in_data = [], [], (), None, False
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                key, _, value = line.partition(" ")
                if key.lower() == "@classlabel" and value.split()[0] == "true":
                    classes = tuple(value.split()[1:])
                dimensions = int(value) if key.lower() == "@dimensions" else dimensions
                in_data = key.lower() == "@data"
                continue
            *channels, label = line.split(":")
            try:
                values = [[np.nan if text == "?" else float(text) for text in channel.split(",")]
                          for channel in channels]
            except ValueError as error:
                raise DataError(f"{path}: line {number}: {error}") from None
            if len(channels) != (dimensions or len(channels)) or len({len(channel) for channel in values}) != 1:
                raise DataError(f"{path}: line {number}: expected {dimensions} channels of equal length, got "
                                f"lengths {[len(channel) for channel in values]}")
            cases.append(np.asarray(values, dtype=np.float32).T)
            labels.append(label.strip())
    return cases, labels, classes


def _basic_motions(folder: Path) -> Recordings:
    signals, ids, names, files, classes = [], [], [], [], ()
    for part in ("TRAIN", "TEST"):
        path = folder / "BasicMotions" / f"BasicMotions_{part}.ts"
        cases, labels, classes = read_ts(path)
        signals += cases
        names += labels
        ids += [f"BasicMotions_{part}-{index:04d}" for index in range(len(cases))]
        files += [str(path)] * len(cases)
    # 10 s at 10 Hz per recording ("sampled once every tenth of a second, for a ten second period").
    return Recordings(signals, tuple(ids), BASIC_MOTIONS_CHANNELS, 10.0,
                      "BasicMotions (UEA archive, TRAIN and TEST pooled; shipped inside the aeon wheel)",
                      labels=np.array([classes.index(name) for name in names], dtype=np.int64),
                      class_names=classes, files=tuple(files),
                      given_split=tuple("train" if "_TRAIN-" in item else "test" for item in ids))


def _internal_bleeding(folder: Path) -> Recordings:
    # UCR anomaly archive series 135 (InternalBleeding16, a patient's arterial blood pressure): its TEST file is
    # the whole series (the TRAIN file is its first 1,200 samples again, which the leakage check catches when
    # both are read), with one labelled anomaly of 12 samples. The file gives sample numbers, not times: rates
    # are per sample (1 "Hz").
    path = folder / "KDD-TSAD_135" / "135_UCR_Anomaly_InternalBleeding16_TEST.csv"
    recordings = load_csv(path, ("value",), 1, time_column="timestamp", label_column="is_anomaly",
                          label_per="sample", anomaly_values=("1",), sampling_rate_hz=1.0)
    return dataclasses.replace(recordings, ids=("InternalBleeding16",), class_names=("normal", "anomaly"),
                               origin="UCR anomaly archive 135, InternalBleeding16 (KDD-TSAD; shipped inside the "
                                      "aeon wheel)")


EMBEDDED = {"basic_motions": _basic_motions, "internal_bleeding": _internal_bleeding}


def load_embedded(name: str) -> Recordings:
    """An embedded sensor dataset by name: 'basic_motions' or 'internal_bleeding'.

    Raises:
        DataError: an unknown name, or aeon's data files are not installed.
    """
    if name not in EMBEDDED:
        raise DataError(f"unknown sensor dataset {name!r} (embedded: {', '.join(EMBEDDED)})")
    return EMBEDDED[name](aeon_data_folder())


def _csv_files(path: Path, leave_out: Path | None = None) -> list[Path]:
    if path.is_dir():
        files = sorted(item for item in path.glob("*.csv") if not item.name.startswith(".")
                       and (leave_out is None or item.resolve() != leave_out.resolve()))
        if not files:
            raise DataError(f"{path}: no CSV files in the folder")
        return files
    if not path.is_file():
        raise DataError(f"{path}: CSV file or folder not found")
    return [path]


def read_text(path: Path, columns: list[str]) -> pd.DataFrame:
    """The file as text cells, with the named columns present; a file pandas cannot read is named with pandas'
    reason."""
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
    for column in columns:
        if column not in frame.columns:
            raise DataError(f"{path}: no column '{column}' (columns: {', '.join(map(str, frame.columns))})")
    return frame


def _numbers(path: Path, frame: pd.DataFrame, column: str, missing: tuple[str, ...]) -> np.ndarray:
    """A column as float64 (missing tokens give NaN). Rows are named by their line (the header is line 1)."""
    text = frame[column].str.strip()
    values = pd.to_numeric(text.mask(text.isin(missing)), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(values) & ~text.isin(missing).to_numpy())
    if len(bad):
        raise DataError(f"{path}: line {bad[0] + 2}, column '{column}': {text.iloc[bad[0]]!r} is not a number"
                        + (f" ({len(bad)} such cells)" if len(bad) > 1 else ""))
    return values


def _seconds(path: Path, frame: pd.DataFrame, column: str, unit_s: float) -> np.ndarray:
    """A time column in seconds: numbers (times `unit_s`), or date-times (seconds since the first)."""
    text = frame[column].str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(dtype=np.float64) * unit_s
    stamps = pd.to_datetime(text, errors="coerce", format="ISO8601")
    bad = np.flatnonzero(stamps.isna().to_numpy())
    if len(bad):
        raise DataError(f"{path}: line {bad[0] + 2}, column '{column}': {text.iloc[bad[0]]!r} is neither a number "
                        "nor a date-time")
    return (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy()


def _segments(keep: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each contiguous run of True."""
    edges = np.diff(np.concatenate([[0], keep.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


@dataclasses.dataclass
class _Part:
    """One recording's rows of a file, before labels are resolved."""

    id: str
    file: Path
    rows: np.ndarray  # positions in the file's data rows (line number = row + 2)
    values: np.ndarray  # float32 (T, C)
    times: np.ndarray | None
    labels: np.ndarray | None  # label text per sample


def _parts(file: Path, values: np.ndarray, times: np.ndarray | None, keys: np.ndarray, labels: np.ndarray | None,
           exclude: tuple[str, ...]) -> list[_Part]:
    """The file's recordings in order of first appearance; with `exclude`, each is cut where those labels are
    (into `<id>-seg00`, `-seg01`, ...)."""
    parts = []
    for key in pd.unique(keys):
        rows = np.flatnonzero(keys == key)
        if times is not None and np.any(np.diff(times[rows]) <= 0):
            back = rows[1:][np.diff(times[rows]) <= 0][0]
            raise DataError(f"{file}: line {back + 2}: time does not increase within recording '{key}'")
        runs = _segments(~np.isin(labels[rows], exclude)) if exclude else [(0, len(rows))]
        for number, (start, stop) in enumerate(runs):
            picked = rows[start:stop]
            parts.append(_Part(f"{key}-seg{number:02d}" if exclude else str(key), file, picked, values[picked],
                               None if times is None else times[picked],
                               None if labels is None else labels[picked]))
    return parts


def _recording_labels(parts: list[_Part], column: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """One class per recording (the same label on each of its rows), as indices into the sorted class names."""
    for part in parts:
        other = np.flatnonzero(part.labels != part.labels[0])
        if len(other):
            raise DataError(f"{part.file}: line {part.rows[other[0]] + 2}, column '{column}': recording "
                            f"'{part.id}' changes label from {part.labels[0]!r} to {part.labels[other[0]]!r} "
                            "(a per-recording label must be the same on every row)")
    names = tuple(sorted({part.labels[0] for part in parts}))
    if len(names) < 2:
        raise DataError(f"{parts[0].file}: label column '{column}' has a single class {names}")
    return np.array([names.index(part.labels[0]) for part in parts], dtype=np.int64), names


def _texts(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """A label or id column as stripped text; an empty cell is an error, named by its line."""
    text = frame[column].str.strip().to_numpy()
    empty = np.flatnonzero(text == "")
    if len(empty):
        raise DataError(f"{path}: line {empty[0] + 2}, column '{column}': empty")
    return text


def _check_unique(parts: list[_Part]) -> None:
    seen: dict[str, Path] = {}
    for part in parts:
        if part.id in seen:
            raise DataError(f"recording '{part.id}' appears in {seen[part.id]} and {part.file}")
        seen[part.id] = part.file


def _measured_rate(parts: list[_Part], path: Path) -> float:
    """Samples per second from the time column: all steps over all the time they span."""
    if parts[0].times is None:
        raise DataError(f"{path}: give the sampling rate or a time column to measure it from")
    seconds = sum(part.times[-1] - part.times[0] for part in parts)
    if seconds <= 0:
        raise DataError(f"{path}: the time column spans no time; give the sampling rate")
    return sum(len(part.times) - 1 for part in parts) / seconds


def check_lengths(recordings: Recordings, length: int) -> None:
    """Every recording holds at least one window of `length` samples.

    Raises:
        DataError: naming the first recording that is too short and its file.
    """
    for index, signal in enumerate(recordings.signals):
        if len(signal) < length:
            where = recordings.files[index] if recordings.files else recordings.origin
            raise DataError(f"{where}: recording '{recordings.ids[index]}' has {len(signal)} samples, fewer than "
                            f"the window of {length} (data.short_recordings: pad or skip)")


def pick(recordings: Recordings, keep: np.ndarray | list[int]) -> Recordings:
    """The recordings at positions `keep`, in order, with everything recorded per recording."""
    listed = lambda values: None if values is None else [values[index] for index in keep]  # noqa: E731
    return dataclasses.replace(recordings, signals=listed(recordings.signals),
                               ids=tuple(recordings.ids[index] for index in keep),
                               labels=None if recordings.labels is None else recordings.labels[np.asarray(keep, int)],
                               sample_labels=listed(recordings.sample_labels), times=listed(recordings.times),
                               files=tuple(listed(recordings.files)) if recordings.files else recordings.files,
                               given_split=None if recordings.given_split is None
                               else tuple(listed(recordings.given_split)))


def fit_lengths(recordings: Recordings, length: int, rule: str = "error",
                pad_mode: str = "edge") -> tuple[Recordings, list[tuple[str, int]]]:
    """Recordings shorter than one window of `length` samples, by `data.short_recordings`: 'error' stops naming
    the first (`check_lengths`), 'pad' extends each to one window (`edge.pad_recording`: its last sample
    repeated, or zeros; the device pads the same way), 'skip' leaves them out.

    Returns:
        (the recordings, (id, samples) of each recording padded or left out).

    Raises:
        DataError: rule 'error' and a short recording, or 'skip' and no recording left.
    """
    if rule == "error":
        check_lengths(recordings, length)
        return recordings, []
    short = [index for index, signal in enumerate(recordings.signals) if len(signal) < length]
    found = [(recordings.ids[index], len(recordings.signals[index])) for index in short]
    if not short:
        return recordings, []
    if rule == "skip":
        keep = [index for index in range(len(recordings.signals)) if index not in set(short)]
        if not keep:
            raise DataError(f"{recordings.origin}: all {len(short)} recordings are shorter than the window of "
                            f"{length} samples; data.short_recordings: skip leaves none")
        return pick(recordings, keep), found
    if rule != "pad":
        raise ValueError(f"short_recordings must be 'error', 'pad' or 'skip', got {rule!r}")
    signals, times, sample_labels = list(recordings.signals), recordings.times, recordings.sample_labels
    times = None if times is None else list(times)
    sample_labels = None if sample_labels is None else list(sample_labels)
    for index in short:
        missing = length - len(signals[index])
        signals[index] = edge.pad_recording(signals[index], length, pad_mode)
        if times is not None:  # the padded samples continue the recording at its rate
            times[index] = np.concatenate([times[index], times[index][-1] + np.arange(1, missing + 1)
                                           / recordings.sampling_rate_hz])
        if sample_labels is not None:
            sample_labels[index] = np.pad(sample_labels[index], (0, missing), mode="edge")
    return dataclasses.replace(recordings, signals=signals, times=times, sample_labels=sample_labels), found


def load_csv(path: str | Path, channels: tuple[str, ...] | list[str], window: int, *,
             time_column: str | None = None, recording_column: str | None = None, label_column: str | None = None,
             label_per: str = "recording", anomaly_values: tuple[str, ...] = ("1",),
             exclude_values: tuple[str, ...] = (),
             sampling_rate_hz: float | None = None, time_unit_s: float = 1.0,
             missing_values: tuple[str, ...] = MISSING_VALUES, short_recordings: str = "error",
             split_column: str | None = None, split_file: str | Path | None = None) -> Recordings:
    """A user's recordings: a folder of CSV files (one recording each, named by the file, unless
    `recording_column` names them) or one CSV file (one recording, or one per value of `recording_column`).

    Args:
        channels: the signal columns, in the model's channel order; a missing cell is a NaN sample.
        window: the window length in samples; every recording must hold one.
        time_column: seconds (numbers times `time_unit_s`) or date-times; must increase within a recording.
        label_column: with `label_per='recording'` the class (the same on every row of a recording); with
            'sample', a per-sample annotation, anomalous where its text is in `anomaly_values`.
        exclude_values: per-sample annotations to drop (Daphnet's 0, outside the experiment); the recording is
            cut at them into contiguous segments `<id>-seg00`, `<id>-seg01`, ...
        sampling_rate_hz: the rate; when None, measured from the time column.
        short_recordings: 'error' stops at a recording shorter than `window`; 'pad' and 'skip' leave them to
            `fit_lengths`.
        split_column: the column naming each row's split (train, val, test), the same on every row of a
            recording: the dataset's own split (`given_split`).
        split_file: instead, a CSV file of `recording,split` rows (left out of a folder's recordings).

    Raises:
        DataError: naming the file and column (missing column), the line and column (a non-numeric sample or
            time, a label that changes within a recording, time running backwards), or the recording and file
            (shorter than the window).
    """
    if label_per not in ("recording", "sample"):
        raise ValueError(f"label_per must be 'recording' or 'sample', got {label_per!r}")
    if exclude_values and not (label_column and label_per == "sample"):
        raise ValueError("exclude_values needs a per-sample label_column")
    parts: list[_Part] = []
    splits_of: dict[str, str] = {}  # recording -> the dataset's own split
    listed = given.read_file(Path(split_file), read_text(Path(split_file), ["recording", "split"])) \
        if split_file else None
    for file in _csv_files(Path(path), Path(split_file) if split_file else None):
        named = [recording_column, time_column, label_column, None if listed is not None else split_column]
        frame = read_text(file, [c for c in named if c] + list(channels))
        values = np.stack([_numbers(file, frame, column, missing_values) for column in channels], axis=1)
        times = _seconds(file, frame, time_column, time_unit_s) if time_column else None
        labels = _texts(file, frame, label_column) if label_column else None
        keys = _texts(file, frame, recording_column) if recording_column else np.full(len(frame), file.stem)
        found = _parts(file, values.astype(np.float32), times, keys, labels, tuple(map(str, exclude_values)))
        if split_column and listed is None:
            splits_of.update(_row_splits(file, frame, split_column, found))
        parts += found
    if not parts:
        raise DataError(f"{path}: no samples left after leaving out the annotations {list(exclude_values)}")
    _check_unique(parts)
    if sampling_rate_hz is None:
        sampling_rate_hz = _measured_rate(parts, Path(path))
    if listed is not None:
        splits_of = _file_splits(Path(split_file), listed, parts)
    recordings = Recordings([part.values for part in parts], tuple(part.id for part in parts), tuple(channels),
                            float(sampling_rate_hz), f"CSV {path}", files=tuple(str(part.file) for part in parts),
                            times=[part.times for part in parts] if time_column else None,
                            given_split=tuple(splits_of[part.id] for part in parts) if splits_of else None)
    if label_column and label_per == "recording":
        recordings.labels, recordings.class_names = _recording_labels(parts, label_column)
    elif label_column:
        anomalous = tuple(map(str, anomaly_values))
        recordings.sample_labels = [np.isin(part.labels, anomalous).astype(np.int8) for part in parts]
        recordings.class_names = ("normal", "anomaly")
    if short_recordings == "error":
        check_lengths(recordings, window)
    return recordings


def _row_splits(file: Path, frame: pd.DataFrame, column: str, parts: list[_Part]) -> dict[str, str]:
    """recording -> split from a split column: one value per recording (a recording in two splits would put its
    windows on both sides of the split)."""
    found = {}
    for part in parts:
        values = frame[column].to_numpy()[part.rows]
        names = {}  # each distinct text once, named by its first line
        for text in pd.unique(values):
            row = part.rows[np.flatnonzero(values == text)[0]]
            names[row] = given.name(text, f"{file}: line {row + 2}, column '{column}'")
        rows = sorted(names)
        other = [row for row in rows if names[row] != names[rows[0]]]
        if other:
            raise DataError(f"{file}: line {other[0] + 2}, column '{column}': recording '{part.id}' is in both "
                            f"{names[rows[0]]} and {names[other[0]]} (leakage: a recording's windows never cross "
                            "splits)")
        found[part.id] = names[rows[0]]
    return found


def _file_splits(path: Path, listed: dict[str, str], parts: list[_Part]) -> dict[str, str]:
    """recording -> split from `split.file`: every recording listed, and nothing listed that was not read."""
    found = {}
    for part in parts:
        key = part.id if part.id in listed else part.id.rsplit("-seg", 1)[0]  # a cut recording's segments
        if key not in listed:
            raise DataError(f"{path}: no row for recording '{part.id}' (read from {part.file})")
        found[part.id] = listed[key]
    unknown = sorted(set(listed) - {part.id for part in parts} - {part.id.rsplit("-seg", 1)[0] for part in parts})
    if unknown:
        raise DataError(f"{path}: recording '{unknown[0]}' is not among the recordings read"
                        + (f" ({len(unknown)} such rows)" if len(unknown) > 1 else ""))
    return found


def windows(recordings: Recordings, length: int, stride: int, anomaly_share: float = 0.5) -> Windows:
    """Fixed-length windows every `stride` samples of each recording, in recording order.

    A window with a missing (NaN) sample is left out (`profile` counts them). Labels: classification, the
    recording's class; anomaly, 1 when at least `anomaly_share` of the window's samples are anomalous (0 for
    every window of unlabeled recordings).

    Raises:
        DataError: a recording shorter than `length`, named.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"window length and stride must be positive, got {length} and {stride}")
    check_lengths(recordings, length)
    xs, owners, starts, labels = [], [], [], []
    for index, signal in enumerate(recordings.signals):
        start = np.arange(0, len(signal) - length + 1, stride)
        x = np.lib.stride_tricks.sliding_window_view(signal, length, axis=0)[start].transpose(0, 2, 1)
        if recordings.labels is not None:
            label = np.full(len(start), recordings.labels[index])
        elif recordings.sample_labels is not None:
            shares = np.lib.stride_tricks.sliding_window_view(recordings.sample_labels[index], length)[start]
            label = (shares.mean(axis=1) >= anomaly_share).astype(np.int64)
        else:
            label = np.zeros(len(start), np.int64)
        complete = ~np.isnan(x).any(axis=(1, 2))
        xs.append(x[complete])
        owners.append(np.full(complete.sum(), index))
        starts.append(start[complete])
        labels.append(label[complete])
    return Windows(np.concatenate(xs).astype(np.float32), np.concatenate(owners), np.concatenate(starts),
                   np.concatenate(labels).astype(np.int64))


def summary_features(x: np.ndarray) -> np.ndarray:
    """Per window and channel: mean, standard deviation, minimum, maximum and mean absolute difference between
    consecutive samples, (N, 5 * C): what a classical baseline (a random forest) reads of a window."""
    steps = np.abs(np.diff(x, axis=1)).mean(axis=1)
    return np.concatenate([x.mean(axis=1), x.std(axis=1), x.min(axis=1), x.max(axis=1), steps], axis=1)


def window_features(x: np.ndarray, peaks: int = 3) -> np.ndarray:
    """Per window and channel: mean, standard deviation, minimum, maximum, least-squares slope (per sample) and the
    `peaks` strongest spectral peaks (local maxima of the amplitude spectrum without its DC term, above a
    thousandth of its largest value: frequency as a share of the Nyquist frequency, then amplitude; zeros where a
    window has fewer), (N, (5 + 2 * peaks) * C):
    what analyze's classical baselines read of a window."""
    x = np.asarray(x, dtype=np.float64)
    count, length, channels = x.shape
    centred = x - x.mean(axis=1, keepdims=True)
    time = np.arange(length) - (length - 1) / 2
    slope = np.einsum("ntc,t->nc", centred, time) / max(float((time ** 2).sum()), 1e-12)
    spectrum = np.abs(np.fft.rfft(centred, axis=1))[:, 1:] / length  # (N, F, C)
    padded = np.pad(spectrum, ((0, 0), (1, 1), (0, 0)), constant_values=-1.0)
    floor = 1e-3 * spectrum.max(axis=1, keepdims=True)  # rounding noise of a pure tone makes no peak
    local = (spectrum > floor) & (spectrum >= padded[:, :-2]) & (spectrum >= padded[:, 2:])
    score = np.where(local, spectrum, -1.0)
    order = np.argsort(-score, axis=1, kind="stable")[:, :peaks]
    found = np.take_along_axis(score, order, axis=1) > 0
    frequency = np.where(found, (order + 1) / max(length // 2, 1), 0.0)
    amplitude = np.where(found, np.take_along_axis(spectrum, order, axis=1), 0.0)
    if order.shape[1] < peaks:  # a window too short for that many frequencies
        missing = ((0, 0), (0, peaks - order.shape[1]), (0, 0))
        frequency, amplitude = np.pad(frequency, missing), np.pad(amplitude, missing)
    return np.concatenate([x.mean(axis=1), x.std(axis=1), x.min(axis=1), x.max(axis=1), slope,
                           frequency.reshape(count, -1), amplitude.reshape(count, -1)], axis=1)


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of each run of identical consecutive values."""
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], change])
    return starts, np.diff(np.concatenate([starts, [len(values)]]))


def _stretches(recordings: Recordings, channel: int, min_samples: int, values: tuple[float, ...] = ()) -> dict:
    """Runs of one value of at least `min_samples` samples (only runs at `values` when given)."""
    found = []
    for index, signal in enumerate(recordings.signals):
        column = signal[:, channel]
        starts, lengths = _runs(column)
        keep = (lengths >= min_samples) & (np.isin(column[starts], values) if values else True)
        found += [(recordings.ids[index], int(s), int(n)) for s, n in zip(starts[keep], lengths[keep])]
    return {"count": len(found), "samples": sum(n for _, _, n in found),
            "first": [{"recording": rid, "start": start, "samples": n} for rid, start, n in found[:5]]}


MIN_FLAT_SAMPLES = 5  # a flat-lined stretch is at least this long, however slow the sampling
FLAT_RUN_FACTOR = 4  # ... and this many times longer than the channel's own long runs (95th percentile)


def flat_samples(recordings: Recordings, channel: int, flat_seconds: float) -> int:
    """The shortest run of one value that counts as flat-lined on `channel`: longer than `flat_seconds` at the
    sampling rate, at least `MIN_FLAT_SAMPLES` (at 2 Hz or less `flat_seconds` alone would flag every sample),
    and `FLAT_RUN_FACTOR` times the 95th percentile of the channel's runs, so a slow or coarsely quantized signal
    whose value repeats for a few samples between steps of its resolution is not flagged; a stuck sensor's run is
    far longer than those."""
    lengths = np.concatenate([_runs(signal[:, channel])[1] for signal in recordings.signals if len(signal)])
    typical = float(np.percentile(lengths, 95)) if len(lengths) else 1.0
    by_time = int(np.floor(flat_seconds * recordings.sampling_rate_hz)) + 1  # longer than flat_seconds
    return max(by_time, MIN_FLAT_SAMPLES, int(np.ceil(FLAT_RUN_FACTOR * typical)))


def _timing(recordings: Recordings) -> dict:
    """Sampling-rate jitter per recording: the std of the time steps over their median."""
    if recordings.times is None:
        return {"sampling_rate_hz": recordings.sampling_rate_hz, "time_column": False}
    jitter = [float(np.std(np.diff(t)) / np.median(np.diff(t))) if len(t) > 2 else 0.0 for t in recordings.times]
    worst = int(np.argmax(jitter))
    return {"sampling_rate_hz": recordings.sampling_rate_hz, "time_column": True,
            "median_step_s": float(np.median(np.concatenate([np.diff(t) for t in recordings.times]))),
            "jitter_median": float(np.median(jitter)), "jitter_max": jitter[worst],
            "jitter_max_recording": recordings.ids[worst]}


def profile(recordings: Recordings, flat_seconds: float = 0.5, clip_samples: int = 3) -> dict:
    """What an analysis report shows of sensor recordings (JSON-ready).

    Per channel: min, max, mean, std, missing (NaN) samples, flat-lined stretches (one value for longer than
    `flat_seconds` and than the channel's own repeats allow, see `flat_samples`) and clipped stretches (at least
    `clip_samples` samples at the channel's min or max); the sampling-rate jitter from the time column; recording
    lengths; recordings per class, or anomalous samples.
    """
    stacked = np.concatenate(recordings.signals)
    channels = {}
    for index, name in enumerate(recordings.channels):
        column = stacked[:, index].astype(np.float64)
        low, high = float(np.nanmin(column)), float(np.nanmax(column))
        shortest = flat_samples(recordings, index, flat_seconds)
        channels[name] = {"min": low, "max": high, "mean": float(np.nanmean(column)),
                          "std": float(np.nanstd(column)), "missing": int(np.isnan(column).sum()),
                          "flat_lined": {**_stretches(recordings, index, shortest), "min_samples": shortest},
                          "clipped": _stretches(recordings, index, clip_samples, (low, high))}
    lengths = np.array([len(signal) for signal in recordings.signals])
    report = {"origin": recordings.origin, "task": recordings.task, "channels": channels,
              "timing": _timing(recordings),
              "lengths": {"recordings": len(lengths), "min": int(lengths.min()), "median": float(np.median(lengths)),
                          "max": int(lengths.max()), "total_samples": int(lengths.sum()),
                          "seconds": float(lengths.sum() / recordings.sampling_rate_hz)}}
    if recordings.labels is not None:
        counts = np.bincount(recordings.labels, minlength=len(recordings.class_names))
        report["recordings_per_class"] = {name: int(count) for name, count in zip(recordings.class_names, counts)}
    elif recordings.sample_labels is not None:
        anomalous = [int(labels.sum()) for labels in recordings.sample_labels]
        report["anomalous_samples"] = {"samples": sum(anomalous), "share": sum(anomalous) / int(lengths.sum()),
                                       "recordings_with_anomalies": sum(count > 0 for count in anomalous)}
    return report


SPLITS = ("train", "val", "test")


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"val and test fractions must be positive with a sum under 1, got {val_fraction} and "
                         f"{test_fraction}")


def _group_holdout(indices: np.ndarray, groups: np.ndarray, labels: np.ndarray | None, fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held out): about `fraction` of the items held out, whole groups only, stratified by label."""
    folds = max(2, round(1 / fraction))
    count = len(np.unique(groups[indices]))
    if count < folds:
        raise DataError(f"grouped split: {count} recordings (groups) cannot give a share of {fraction:.2f} by "
                        "whole recordings; use more recordings or the temporal split")
    if labels is None:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        rest, held = next(splitter.split(indices, groups=groups[indices]))
    else:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        rest, held = next(splitter.split(indices, labels[indices], groups[indices]))
    return indices[rest], indices[held]


def grouped_split(groups: np.ndarray, labels: np.ndarray | None, val_fraction: float, test_fraction: float,
                  seed: int, candidates: np.ndarray | None = None, share: float | None = None) -> dict[str, np.ndarray]:
    """Window indices per split, each group (a recording, or a subject) inside one split; stratified by label
    when labels are given (scikit-learn's StratifiedGroupKFold; GroupShuffleSplit without labels).

    Raises:
        DataError: too few groups for the requested fractions.
    """
    _check_fractions(val_fraction, test_fraction)
    groups = np.asarray(groups)
    labels = None if labels is None else np.asarray(labels)
    if candidates is None:
        rest, test = _group_holdout(np.arange(len(groups)), groups, labels, test_fraction, seed)
    else:  # the test split drawn from `candidates` only (about `share` of them), the others join the rest
        _, test = _group_holdout(candidates, groups, labels, share, seed)
        rest = np.setdiff1d(np.arange(len(groups)), test)
    train, val = _group_holdout(rest, groups, labels, val_fraction / (1.0 - test_fraction), seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def temporal_split(recording_of_window: np.ndarray, start_of_window: np.ndarray, length: int,
                   val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """Window indices per split in time order within each stream: the first share of a stream's span goes to
    train, the next to val, the last to test, so every test window starts after every train and val window of
    its stream ends (and val after train). A window that straddles a cut is dropped, never shared."""
    _check_fractions(val_fraction, test_fraction)
    recording, begin = np.asarray(recording_of_window), np.asarray(start_of_window)
    end = begin + length
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for stream in np.unique(recording):
        members = np.flatnonzero(recording == stream)
        first, span = begin[members].min(), end[members].max() - begin[members].min()
        train_end = first + round((1.0 - val_fraction - test_fraction) * span)
        val_end = first + round((1.0 - test_fraction) * span)
        parts["train"].append(members[end[members] <= train_end])
        parts["val"].append(members[(begin[members] >= train_end) & (end[members] <= val_end)])
        parts["test"].append(members[begin[members] >= val_end])
    return {name: np.sort(np.concatenate(found)).astype(np.int64) for name, found in parts.items()}
