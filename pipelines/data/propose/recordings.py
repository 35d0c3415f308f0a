"""`init` on a folder of sensor recordings (CSV files): the label and time columns, the channels, the window."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core.errors import DataError
from pipelines.data.propose import Choice, Proposal, csv_files, listed, where
from pipelines.data.propose.columns import TARGET_NAMES, is_numeric, normal, read_csv, time_named

MAX_RECORDINGS = 500  # recordings read to propose (every one is read by the pipeline itself)
WINDOW_SECONDS = 2.0
LABEL_NAMES = (*TARGET_NAMES, "activity", "gesture", "movement", "state", "condition")


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
    for pool in ([column for column in labelled if normal(column) in LABEL_NAMES],
                 [column for column in labelled if not is_numeric(pd.concat([f[column] for f in frames.values()]))],
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
    named = [column for column in increasing if time_named(column)]
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


def propose(folder: Path, shown: str, target: str = "", time_column: str = "", sampling_rate: float = 0.0
            ) -> Proposal:
    """The recordings' label column (one value per file), time column or given rate, channel columns and a
    window of about WINDOW_SECONDS that every recording holds."""
    files = csv_files(folder)
    frames = {file: read_csv(file) for file in files[:MAX_RECORDINGS]}
    first = next(iter(frames.values()))
    columns = [str(column) for column in first.columns if all(column in frame for frame in frames.values())]
    label = _pick_label(folder, frames, columns, target)
    time = _pick_time(folder, frames, columns, time_column, sampling_rate)
    numeric = [column for column in columns if column not in (label, time)
               and all(is_numeric(frame[column]) for frame in frames.values())]
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
        Choice("data.path", shown, where(shown)),
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
        Choice("model.architecture", "cnn1d", "a fully convolutional network over each window (three Conv1D "
               "blocks, global average pooling; model.filters, model.kernel_sizes); recurrent (an LSTM) is the "
               "other choice"),
    ]
    counts = Counter(frame[label].iloc[0] for frame in frames.values())
    read = f" (the first {len(frames)} read)" if len(files) > len(frames) else ""
    sizes = f"{min(lengths)} samples each" if min(lengths) == max(lengths) else \
        f"{min(lengths)} to {max(lengths)} samples"
    found = (f"sensor recordings, {len(files)} CSV files{read} of {sizes}, "
             f"{len(channels)} channels, {len(counts)} classes ({listed(counts)} recordings)")
    return Proposal("signals", found, tuple(choices))
