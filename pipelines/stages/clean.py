"""clean: raw -> canonical form, by the declarative rules of the config, with a cleaning log.

Images become uint8 squares of the configured size and channel count, written to TFRecord shards in one
pass over the files (see pipelines/data/shards.py); unreadable files, exact duplicates and label conflicts are
dropped. Tables get the row-level rules (declared ranges, values derived from another
column, duplicate rows and conflicts, constant columns); fitted imputation and encoding happen in split, on
the training split only. Every dropped or changed item is listed in `cleaning_log.csv` with the rule that did
it: nothing vanishes silently. Raw data is never modified.
"""

from __future__ import annotations

import collections
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd

from pipelines.core import config as config_module
from pipelines.core import figures, stage, tracking, workspace
from pipelines.data import duplicates, shards, signals, sources, splits, tables


def find_drops(hashes: list, labels: np.ndarray, rules: config_module.CleanConfig, ids, class_names=()
               ) -> dict[int, tuple]:
    """index -> (rule, detail) for every duplicate or conflicting item the rules drop; details name items by id
    and labels by class name."""
    name = (lambda label: class_names[label]) if len(class_names) else (lambda label: label)
    drops = {}
    for group in duplicates.exact_groups(hashes):
        found = sorted({name(label) for label in labels[group].tolist()}, key=str)
        if len(found) > 1 and rules.drop_label_conflicts:
            for index in group:
                drops[index] = ("drop_label_conflicts", f"same content carries labels {', '.join(map(str, found))}: "
                                + ", ".join(ids[other] for other in group))
        elif rules.drop_exact_duplicates:
            for index in group[1:]:
                drops[index] = ("drop_exact_duplicates", f"identical to {ids[group[0]]}")
    return drops


def near_duplicate_report(raw: sources.RawImages, groups: dict, folder: Path) -> dict:
    """Writes near_duplicates.json (confirmed pairs, clusters largest first) and a grid of the largest clusters,
    so a user sees what was merged; returns the counts."""
    names = raw.class_names
    pairs = [[raw.ids[a], raw.ids[b], score, names[raw.labels[a]], names[raw.labels[b]]]
             for a, b, score in groups["near_pairs"]]
    members = collections.defaultdict(list)
    for index, cluster in enumerate(groups["cluster"]):
        members[int(cluster)].append(index)
    clusters = sorted((group for group in members.values() if len(group) > 1), key=lambda group: (-len(group),
                                                                                                    group[0]))
    workspace.write_json(folder / "near_duplicates.json", {
        "pairs": pairs, "clusters": [[raw.ids[index] for index in group] for group in clusters]})
    if clusters:
        cluster_grid(raw, clusters[:8], folder / "near_duplicate_clusters.png")
    return {"near_duplicate_pairs": len(pairs), "near_duplicate_pairs_across_classes": sum(
        pair[3] != pair[4] for pair in pairs), "duplicate_clusters": len(clusters),
        "largest_cluster": max((len(group) for group in clusters), default=1)}


def cluster_grid(raw: sources.RawImages, clusters: list[list[int]], path: Path) -> None:
    """One row per cluster (largest first), its members side by side with their ids."""
    columns = min(8, max(len(group) for group in clusters))
    figure, axes = plt.subplots(len(clusters), columns, figsize=(1.4 * columns, 1.5 * len(clusters)),
                                squeeze=False)
    for row, group in enumerate(clusters):
        for column in range(columns):
            axis = axes[row, column]
            axis.axis("off")
            if column < len(group):
                axis.imshow(raw.images[group[column]].convert("RGB"))
                axis.set_title(raw.ids[group[column]][-18:], fontsize=6)
    figure.suptitle("Near-duplicate clusters (largest first): each row lands in one split")
    figures.save(figure, path)


def clean_images(raw: sources.RawImages, config: config_module.Config, folder: Path) -> tuple[list, dict]:
    """One pass over the files: each image is decoded once, hashed, reduced to its near-duplicate view and
    written in canonical form to the shards; the drop rules then pick the items (`clean_key` names their
    records). Memory holds a small record per image, never the images."""
    size, channels = config.data.image_size, config.data.channels
    count = len(raw.images)
    hashes, content, sha = [None] * count, [""] * count, [""] * count
    keys, sides = np.full(count, -1, np.int64), np.zeros(count, np.int64)
    grey = np.zeros((count, duplicates.SIDE, duplicates.SIDE), np.uint8)
    changed = {}
    writer = shards.Writer(folder / "shards", (size, size, channels), config.data.shard_records)
    for index, image in sources.scan(raw, "clean"):
        hashes[index], sides[index] = sources.pixel_hash(image), min(image.size)
        canonical = sources.to_canonical(image, size, channels)
        keys[index] = writer.write(canonical)
        content[index] = splits.content_hash(canonical)
        sha[index] = splits.item_hash(canonical, raw.labels[index].item())
        if sides[index] >= duplicates.MIN_SIDE:
            grey[index] = sources.to_canonical(image, duplicates.SIDE, 1)[..., 0]
        if image.size != (size, size) or image.mode != ("L" if channels == 1 else "RGB"):
            changed[index] = (f"{image.mode} {image.size[0]}x{image.size[1]} -> {size}x{size}x{channels} uint8"
                              + "".join(f"; {rule}" for rule in sources.conversion_rules(image)))
    writer.close()
    sources.check_present(raw)
    sources.require_every_class(raw)
    usable = (keys >= 0) & (sides >= duplicates.MIN_SIDE)
    groups = duplicates.image_groups_from(hashes, grey, usable, sides, raw.images.__getitem__, config.data)
    drops = {index: ("drop_unreadable", problem) for index, problem in raw.problems.items()}
    drops.update({index: rule for index, rule in find_drops(groups["hashes"], raw.labels, config.clean, raw.ids,
                                                            raw.class_names).items() if index not in drops})
    keep = np.array([index for index in range(count) if index not in drops], dtype=np.int64)
    log = [(raw.ids[index], rule, "dropped", detail) for index, (rule, detail) in sorted(drops.items())]
    log += [(raw.ids[index], "canonical_form", "changed", detail) for index, detail in sorted(changed.items())
            if index not in drops]
    # Near-duplicate clusters are found here, once, on the raw images, and travel to split as groups.
    workspace.save_arrays(folder, "clean", key=keys[keep], y=raw.labels[keep], ids=np.array(raw.ids, dtype=str)[keep],
                          cluster=groups["cluster"][keep], content=np.array(content, dtype=str)[keep],
                          sha256=np.array(sha, dtype=str)[keep])
    return log, {"items_in": count, "items_out": len(keep), "dropped": len(drops),
                 "changed": sum(index not in drops for index in changed),
                 **near_duplicate_report(raw, groups, folder)}


def _apply_column_rules(frame: pd.DataFrame, rules: dict, ids: tuple, log: list) -> pd.Series:
    """Declared ranges, then derived values (so a value the range rule invalidates is derived too, before any
    imputation); returns the mask of rows to drop."""
    drop = pd.Series(False, index=frame.index)
    for name, rule in rules.items():
        for row in tables.violations(frame, {name: rule})["range"].get(name, []):
            value = frame.at[row, name]
            if rule.out_of_range == "drop":
                drop.iloc[row] = True
                action, result = "dropped", "row dropped"
            elif rule.out_of_range == "clip":
                frame.at[row, name] = float(np.clip(value, rule.min if rule.min is not None else -np.inf,
                                                    rule.max if rule.max is not None else np.inf))
                action, result = "changed", f"clipped to {frame.at[row, name]:g}"
            else:
                frame.at[row, name] = np.nan
                action, result = "changed", "set missing (imputed after the split)"
            log.append((ids[row], f"columns.{name}.out_of_range={rule.out_of_range}", action,
                        f"{name}={tables.plain(value)} outside [{tables.plain(rule.min)}, {tables.plain(rule.max)}]: "
                        f"{result}"))
        if rule.impute == "derive":
            derived = tables._derived(frame, rule)
            missing = frame[name].isna() & derived.notna() & ~drop
            frame.loc[missing, name] = derived[missing]
            log += [(ids[row], f"columns.{name}.impute=derive", "changed",
                     f"missing {name} = {rule.derive_offset:g} + {rule.derive_scale:g} * {rule.derive_from} = "
                     f"{tables.plain(frame.at[row, name])}") for row in np.flatnonzero(missing)]
    return drop


def clean_table(raw: sources.RawTable, config: config_module.Config, folder: Path) -> tuple[list, dict]:
    frame = raw.features.copy()
    tables._check_columns(frame, config.data.columns, raw.origin)
    log = [("-", "source", "changed", warning) for warning in raw.warnings]
    drop = _apply_column_rules(frame, config.data.columns, raw.ids, log)
    hashes = tables.row_hashes(frame, raw.target)
    feature_hashes = tables.row_hashes(frame, pd.Series([""] * len(frame)))
    duplicate_rules = config.clean
    labels = raw.target.to_numpy()
    for index, (rule, detail) in find_drops(hashes, labels, duplicate_rules, raw.ids, raw.class_names).items():
        drop.iloc[index] = True
        log.append((raw.ids[index], rule, "dropped", detail))
    if raw.task == "classification" and duplicate_rules.drop_label_conflicts:
        for index, (rule, detail) in find_drops(feature_hashes, labels.astype(int), duplicate_rules, raw.ids,
                                                   raw.class_names).items():
            if rule == "drop_label_conflicts" and not drop.iloc[index]:
                drop.iloc[index] = True
                log.append((raw.ids[index], rule, "dropped", detail))
    if config.clean.drop_constant_columns:
        for column in [column for column in frame.columns if frame[column].nunique(dropna=False) <= 1]:
            frame = frame.drop(columns=column)
            log.append((f"column:{column}", "drop_constant_columns", "dropped", "a single value in every row"))
    keep = ~drop.to_numpy()
    table = frame[keep].reset_index(drop=True)
    table["__target"] = raw.target[keep].to_numpy()
    table["__id"] = np.array(raw.ids)[keep]
    for name, values in (("__group", raw.groups), ("__time", raw.times)):
        if values is not None:
            table[name] = values[keep].to_numpy()
    with workspace.atomic_path(folder / "table.parquet") as temporary:
        table.to_parquet(temporary, index=False)
    return log, {"items_in": len(frame), "items_out": int(keep.sum()), "dropped": int((~keep).sum()),
                 "changed": sum(1 for row in log if row[2] == "changed")}


def clean_signals(raw: signals.Recordings, config: config_module.Config, folder: Path) -> tuple[list, dict]:
    """Recordings -> windows of `data.window` samples every `data.stride`: a window with a missing sample is
    dropped and logged (missing samples are never invented); each window keeps its recording (the group split
    keeps together) and its start (the order the temporal split keeps)."""
    data = config.data
    found = signals.windows(raw, data.window, data.stride, data.anomaly_share)
    log = [("-", "window", "changed", f"{len(raw.ids)} recordings -> {len(found.x)} windows of {data.window} "
            f"samples every {data.stride} ({data.window / raw.sampling_rate_hz:g} s at {raw.sampling_rate_hz:g} Hz)")]
    possible = sum(max(0, (len(signal) - data.window) // data.stride + 1) for signal in raw.signals)
    for index, signal in enumerate(raw.signals):
        missing = int(np.isnan(signal).any(axis=1).sum())
        if missing:
            log.append((raw.ids[index], "drop_windows_with_missing_samples", "dropped",
                        f"{missing} missing samples; the windows that hold one are left out"))
    ids = np.array([f"{raw.ids[owner]}@{start}" for owner, start in zip(found.recording, found.start)], dtype=str)
    workspace.save_arrays(folder, "clean", x=found.x, y=found.label, ids=ids,
                          recording=np.array(raw.ids, dtype=str)[found.recording], start=found.start)
    return log, {"items_in": len(raw.ids), "items_out": len(found.x), "dropped": possible - len(found.x),
                 "changed": len(raw.ids)}


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Applies the cleaning rules and writes the canonical data, `dataset.json` and `cleaning_log.csv`."""

    def body(folder: Path) -> dict:
        raw = sources.load(config.data, config.root)
        kind = "signals" if isinstance(raw, signals.Recordings) else raw.kind
        cleaner = {"images": clean_images, "table": clean_table, "signals": clean_signals}[kind]
        log, counts = cleaner(raw, config, folder)
        dataset = {"kind": kind, "task": raw.task, "class_names": list(raw.class_names), "origin": raw.origin}
        if kind == "signals":
            dataset.update({"channels": list(raw.channels), "sampling_rate_hz": raw.sampling_rate_hz,
                            "window": config.data.window, "stride": config.data.stride})
        workspace.write_json(folder / "dataset.json", dataset)
        workspace.write_text(folder / "cleaning_log.csv", workspace.csv_text(workspace.LOG_HEADER, log))
        mlflow.log_artifact(str(folder / "cleaning_log.csv"))
        metrics = {f"clean/{key}": value for key, value in counts.items()}
        tracking.log_metrics(metrics)
        return metrics

    inputs = {"source": sources.fingerprint(config.data, config.root)}
    return stage.execute(config, "clean", ("data", "clean"), inputs, body, force)
