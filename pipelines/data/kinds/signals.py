"""Sensor signals: multichannel recordings (aeon's embedded archives or CSV files) cut into windows.

Analyze profiles the channels and fits a random forest on window features and a 1-NN Euclidean baseline,
cross-validated by recording;
clean cuts each recording into windows of `data.window` samples every `data.stride` (a window with a
missing sample is dropped and logged); split keeps each recording in one split, or cuts each recording in
time (`split.strategy: temporal`), and fits one statistic per channel on the training windows. The device
feeds raw windows; the model normalizes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from pipelines.core import config as config_module
from pipelines.core import figures, workspace
from pipelines.data import signals, sources, splits
from pipelines.data.splits import Assignment

NAME = "signals"
DEVICE_FIELDS = ("channels", "sampling_rate_hz", "window", "stride")
# what the device also does as training did, with the value a dataset.json written before them meant
DEVICE_RULES = {"short_recordings": "error", "pad_mode": "edge", "recording_vote": "mean"}


def read(config: config_module.Config) -> signals.Recordings:
    return sources.load(config.data, config.root, config.split)


def profile(raw: signals.Recordings, config: config_module.Config, folder: Path) -> tuple[dict, dict]:
    """Per-channel ranges, missing samples, flat-lined and clipped stretches, sampling-rate jitter, and two
    classical baselines cross-validated by recording (3 folds, no recording in two folds): a random forest on
    window features (`signals.window_features`) and 1-NN Euclidean on the raw windows."""
    data, seed = config.data, config.split.seed
    raw, _ = signals.fit_lengths(raw, data.window, data.short_recordings, data.pad_mode)
    windows = signals.windows(raw, data.window, data.stride)
    headline = {}
    report = {"source": raw.origin, "kind": NAME, "task": raw.task, "items": len(raw.ids),
              "windows": int(len(windows.x)), "window": data.window, "stride": data.stride,
              **signals.profile(raw)}
    if raw.task == "classification":
        counts = np.bincount(raw.labels, minlength=len(raw.class_names))
        report["class_counts"] = {name: int(count) for name, count in zip(raw.class_names, counts)}
        forest = RandomForestClassifier(n_estimators=100, random_state=seed)
        # whole recordings per fold, and a test share of recordings held out as the split holds out its own
        grouped = dataclasses.replace(config.split, strategy="stratified" if config.split.strategy == "stratified"
                                      else "random")
        pool, folds, how = splits.analysis_folds(len(windows.label), windows.label,
                                                 np.asarray(windows.recording), None, grouped)
        scores = cross_val_score(forest, signals.window_features(windows.x[pool]), windows.label[pool], cv=folds)
        report["baseline"] = {"model": "random forest on window features (per channel: mean, std, min, max, "
                              "slope, 3 spectral peaks)", "metric": "accuracy", "cv_folds": len(folds),
                              "evaluated_on": how, "score_mean": float(scores.mean()),
                              "score_std": float(scores.std())}
        report["baselines"] = {"random_forest": report["baseline"],
                               "nearest_neighbour": _nearest_neighbour(windows, pool, folds, how)}
        nearest = report["baselines"]["nearest_neighbour"]
        if "score_mean" in nearest:
            headline["analyze/baseline_1nn_score"] = nearest["score_mean"]
    else:
        report["baseline"] = {"model": "none (anomaly detection)", "metric": "-", "cv_folds": 0,
                              "score_mean": float("nan"), "score_std": float("nan")}
    _grid(raw, windows, data, folder / "samples.png")
    return report, headline


NEAREST_LIMIT = 20_000  # windows; the 1-NN baseline compares every pair of the pool's windows


def _nearest_neighbour(windows: signals.Windows, pool: np.ndarray, folds: list, how: str) -> dict:
    """1-NN with the Euclidean distance between raw windows (the time-series archive's yardstick), on the same
    folds as the random forest."""
    if len(pool) > NEAREST_LIMIT:
        return {"model": "1-NN Euclidean on raw windows", "skipped": f"{len(pool)} windows, over {NEAREST_LIMIT}"}
    nearest = KNeighborsClassifier(n_neighbors=1, algorithm="brute")
    flat = windows.x[pool].reshape(len(pool), -1)
    scores = cross_val_score(nearest, flat, windows.label[pool], cv=folds)
    return {"model": "1-NN Euclidean on raw windows", "metric": "accuracy", "cv_folds": len(folds),
            "evaluated_on": how, "score_mean": float(scores.mean()), "score_std": float(scores.std())}


def _grid(raw: signals.Recordings, windows: signals.Windows, data: config_module.DataConfig, path: Path) -> None:
    """One row per class, three example windows each, every channel a line."""
    names = raw.class_names or ("windows",)
    figure, axes = plt.subplots(len(names), 3, figsize=(10, 1.8 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        members = np.flatnonzero(windows.label == row)[:: max(1, int(np.sum(windows.label == row)) // 3)][:3]
        for column in range(3):
            axis = axes[row, column]
            if column < len(members):
                axis.plot(windows.x[members[column]], linewidth=0.8)
            axis.set_title(f"{name}: {raw.ids[windows.recording[members[column]]]}" if column < len(members)
                           else name, fontsize=7)
            axis.tick_params(labelsize=6)
    axes[0, -1].legend(raw.channels, fontsize=5, loc="upper right")
    figure.suptitle(f"Example windows per class ({data.window} samples at {raw.sampling_rate_hz:g} Hz)")
    figures.save(figure, path)


def clean(raw: signals.Recordings, config: config_module.Config, folder: Path) -> tuple[list, dict, dict]:
    """Recordings -> windows of `data.window` samples every `data.stride`: a window with a missing sample is
    dropped and logged (missing samples are never invented); each window keeps its recording (the group split
    keeps together) and its start (the order the temporal split keeps)."""
    data = config.data
    count = len(raw.ids)
    raw, short = signals.fit_lengths(raw, data.window, data.short_recordings, data.pad_mode)
    log = [(recording, f"short_recordings={data.short_recordings}", "dropped" if data.short_recordings == "skip"
            else "changed", f"{samples} samples, fewer than the window of {data.window}: "
            + ("left out" if data.short_recordings == "skip" else f"padded ({data.pad_mode}) to {data.window}"))
           for recording, samples in short]
    if short:
        log.append(("-", f"short_recordings={data.short_recordings}", "dropped" if data.short_recordings == "skip"
                    else "changed", f"{len(short)} of {count} recordings shorter than the window of {data.window} "
                    + ("left out" if data.short_recordings == "skip" else f"padded ({data.pad_mode})")))
    found = signals.windows(raw, data.window, data.stride, data.anomaly_share)
    log.append(("-", "window", "changed", f"{len(raw.ids)} recordings -> {len(found.x)} windows of {data.window} "
                f"samples every {data.stride} ({data.window / raw.sampling_rate_hz:g} s at "
                f"{raw.sampling_rate_hz:g} Hz)"))
    possible = sum(max(0, (len(signal) - data.window) // data.stride + 1) for signal in raw.signals)
    for index, signal in enumerate(raw.signals):
        missing = int(np.isnan(signal).any(axis=1).sum())
        if missing:
            log.append((raw.ids[index], "drop_windows_with_missing_samples", "dropped",
                        f"{missing} missing samples; the windows that hold one are left out"))
    ids = np.array([f"{raw.ids[owner]}@{start}" for owner, start in zip(found.recording, found.start)], dtype=str)
    given_split = {} if raw.given_split is None else \
        {"given": np.array(raw.given_split, dtype=str)[found.recording]}  # the dataset's own split per window
    workspace.save_arrays(folder, "clean", x=found.x, y=found.label, ids=ids,
                          recording=np.array(raw.ids, dtype=str)[found.recording], start=found.start, **given_split)
    fields = {"channels": list(raw.channels), "sampling_rate_hz": raw.sampling_rate_hz, "window": data.window,
              "stride": data.stride, "short_recordings": data.short_recordings, "pad_mode": data.pad_mode,
              "recording_vote": data.recording_vote}
    counts = {"items_in": count, "items_out": len(found.x), "dropped": possible - len(found.x),
              "changed": len(raw.ids)}
    if short:
        counts["short_recordings"] = len(short)
    return log, counts, fields


def split(clean_folder: Path, dataset: dict, config: config_module.Config, folder: Path,
          used: set[str] = frozenset()) -> tuple[Assignment, dict]:
    """Windows of one recording (and identical windows) stay together; or each recording is cut in time."""
    x, y, ids, recording, start = workspace.load_arrays(clean_folder, "clean", "x", "y", "ids", "recording", "start")
    rules = config.split
    stratify = y if rules.strategy in ("stratified", "predefined") and dataset["task"] == "classification" else None
    temporal = rules.strategy == "temporal"
    content = [splits.content_hash(window) for window in x]
    grouping = splits.group_ids(content, recording)
    barred = splits.barred_items(content, used)
    if rules.strategy == "predefined":  # the dataset's own split, per recording; val carved by recording
        parts = splits.predefined(splits.given_split(clean_folder), stratify, grouping, rules, barred, ids,
                                  "recordings")
    elif temporal:
        parts = signals.temporal_split(recording, start, x.shape[1], rules.val_fraction, rules.test_fraction)
        splits.check_unused_test(parts["test"], barred, ids)
    else:
        candidates, share = splits.test_candidates(grouping, barred, rules.test_fraction)
        parts = signals.grouped_split(grouping, stratify, rules.val_fraction, rules.test_fraction, rules.seed,
                                      *((candidates, share) if barred is not None else ()))
    for name in splits.SPLITS:
        workspace.save_arrays(folder, name, x=x[parts[name]], y=y[parts[name]], ids=ids[parts[name]])
    dataset["input_shape"] = list(x.shape[1:])
    hashes = [splits.item_hash(window, label.item()) for window, label in zip(x, y)]
    # one statistic per sensor channel, whatever normalize.scope says
    per_channel = dataclasses.replace(config.normalize, scope="per_channel")
    statistics = splits.normalizer(x[parts["train"]], per_channel, per_feature=False)
    return Assignment(parts, ids, y, hashes, grouping, stratify, content=content,
                      groups=None if temporal else recording, times=start,
                      streams=recording if temporal else None), statistics


BASELINE = "forest"


def features(x) -> np.ndarray:
    """Per-channel statistics of each window (mean, std, min, max, mean absolute step), as analyze's baseline."""
    return signals.summary_features(x.array())


def preprocessing(dataset: dict, split_folder: Path) -> dict:
    """Raw sensor values in, a window at a time; the normalization is inside the model."""
    return {"kind": "signal", **{key: dataset[key] for key in DEVICE_FIELDS},
            **{key: dataset.get(key, default) for key, default in DEVICE_RULES.items()}}
