"""split: train/val/test without leakage, a manifest with content hashes, and the train-only preprocessing.

Strategies: stratified (classification) or random, seeded; temporal (the latest rows go to test). Items that
share content (exact duplicates), near-duplicate images (perceptual-hash clusters found by clean) and, when
asked, rows of one `data.group_column` group always land in one split. A leakage check runs on every split
and fails the stage naming the items. The same config gives a byte-identical `split_manifest.json`.
Table preprocessing (imputation, bins, one-hot) and the normalizer are fitted on the training split only.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from pipelines.core import config as config_module
from pipelines.core import stage, tracking, workspace
from pipelines.data import shards, signals, splits, tables


def _imputation_log(frame: pd.DataFrame, ids: np.ndarray, fitted: list[dict]) -> str:
    """Every cell the train-fitted imputer fills, with its rule and value (clean logs its own changes)."""
    rows = []
    for entry in fitted:
        for index in np.flatnonzero(frame[entry["column"]].isna().to_numpy()):
            rows.append((str(ids[index]), f"impute={entry['impute']}", "changed",
                         f"missing {entry['column']} -> {entry['fill']} (fitted on train)"))
    return workspace.csv_text(workspace.LOG_HEADER, rows)


def _load_clean(folder: Path, dataset: dict) -> tuple:
    """(x or frame, y, ids, cluster, column groups, times) from the clean stage."""
    if dataset["kind"] == "images":  # keys into clean's shards: the pixels stay there
        return workspace.load_arrays(folder, "clean", "key", "y", "ids", "cluster") + (None, None)
    if dataset["kind"] == "signals":  # windows, with their recording (group) and start (time)
        x, y, ids, recording, start = workspace.load_arrays(folder, "clean", "x", "y", "ids", "recording", "start")
        return x, y, ids, None, recording, start
    table = pd.read_parquet(folder / "table.parquet")
    groups = np.array(table["__group"].astype(str).tolist(), dtype=str) if "__group" in table else None
    times = table["__time"].to_numpy() if "__time" in table else None
    frame = table.drop(columns=[c for c in ("__target", "__id", "__group", "__time") if c in table])
    ids = np.array(table["__id"].astype(str).tolist(), dtype=str)
    return frame, table["__target"].to_numpy(), ids, None, groups, times


def image_shape(clean_folder: Path) -> tuple[int, ...]:
    """The canonical image shape, from the shard index."""
    return shards.open_shards(clean_folder / "shards", verify=False).shape


def _manifest(ids, labels, hashes, content, parts, cluster, groups, times, fold_of, streams=None) -> dict:
    items = []
    for name in splits.SPLITS:
        for index in parts[name]:
            item = {"id": str(ids[index]), "label": labels[index].item(), "sha256": hashes[index], "split": name}
            if content is not None:
                item["content"] = content[index]
            if cluster is not None:
                item["cluster"] = int(cluster[index])
            if groups is not None:
                item["group"] = str(groups[index])
            if times is not None:
                item["time"] = times[index].item() if hasattr(times[index], "item") else str(times[index])
            if streams is not None:
                item["stream"] = str(streams[index])
            if int(index) in fold_of:
                item["fold"] = fold_of[int(index)]
            items.append(item)
    items.sort(key=lambda item: item["id"])
    return {"counts": {name: int(len(parts[name])) for name in splits.SPLITS}, "items": items}


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Splits the cleaned data, checks for leakage, fits preprocessing and the normalizer on train."""
    clean_folder, _ = stage.upstream(config, "clean", "split")

    def body(folder: Path) -> dict:
        dataset = workspace.read_json(clean_folder / "dataset.json")
        x, y, ids, cluster, groups, times = _load_clean(clean_folder, dataset)
        is_signal = dataset["kind"] == "signals"
        is_table = dataset["kind"] == "table" or is_signal  # arrays, stored by split
        stratify = y if config.split.strategy == "stratified" and dataset["task"] == "classification" else None
        temporal = config.split.strategy == "temporal"
        if is_signal:  # windows of one recording (and identical windows) stay together; or cut in time
            raw_hashes = [splits.content_hash(window) for window in x]
            grouping = splits.group_ids(raw_hashes, groups)
            parts = signals.temporal_split(groups, times, x.shape[1], config.split.val_fraction,
                                           config.split.test_fraction) if temporal else signals.grouped_split(
                grouping, stratify, config.split.val_fraction, config.split.test_fraction, config.split.seed)
            column_groups = None if temporal else groups
        else:
            content, item_hashes = (None, None) if is_table else workspace.load_arrays(clean_folder, "clean",
                                                                                       "content", "sha256")
            raw_hashes = tables.row_hashes(x, pd.Series(y)) if is_table else content.tolist()
            column_groups = groups if config.split.group == "column" else None
            grouping = splits.group_ids(raw_hashes, cluster, column_groups)
            parts = splits.assign(stratify, grouping, times, config.split)
            if not temporal:
                splits.check_ratios(parts, grouping, ids, config.split)
        if is_table and not is_signal:
            transformer = tables.preprocessor(x, config.data.columns, config.normalize).fit(x.iloc[parts["train"]])
            dataset["feature_names"] = [str(name) for name in transformer.get_feature_names_out()]
            fitted = tables.describe_fitted(transformer)
            workspace.write_json(folder / "preprocessing.json", fitted)
            workspace.write_text(folder / "imputation_log.csv", _imputation_log(x, ids, fitted))
            x = transformer.transform(x).astype(np.float32)
            y = y.astype(np.float32 if dataset["task"] == "regression" else np.int64)
        fold_of = splits.fold_numbers(parts, stratify, grouping, config.split) if config.split.folds else {}
        for name in splits.SPLITS:
            index = parts[name]
            workspace.save_arrays(folder, name, **({"x": x[index]} if is_table else {"keys": x[index]}),
                                  y=y[index], ids=ids[index])
        hashes = [splits.item_hash(row, label.item()) for row, label in zip(x, y)] if is_table else \
            item_hashes.tolist()
        manifest = _manifest(ids, y, hashes, raw_hashes if is_table else None, parts, cluster, column_groups,
                             times, fold_of, streams=groups if is_signal and temporal else None)
        splits.check_leakage(manifest["items"], temporal=temporal)
        workspace.write_json(folder / splits.MANIFEST, manifest)
        if not is_table:  # clean's shards, from here; a relative path, so the project can move
            dataset["shards"] = os.path.relpath(clean_folder / "shards", folder)
            workspace.write_json(folder / "dataset.json", dataset)
        if is_signal:  # one statistic per sensor channel, whatever normalize.scope says
            per_channel = dataclasses.replace(config.normalize, scope="per_channel")
            statistics = splits.normalizer(x[parts["train"]], per_channel, per_feature=False)
        elif is_table:  # scaled inside the fitted preprocessing
            statistics = {"fitted_on": "train", "method": config.normalize.method, "scope": "in_preprocessing",
                          "mean": [0.0], "variance": [1.0]}
        else:  # one chunked pass over the training records in the shards
            statistics = splits.normalizer(splits.split_items(folder, "train"), config.normalize, per_feature=False)
        workspace.write_json(folder / "normalizer.json", statistics)
        dataset["input_shape"] = list(x.shape[1:]) if is_table else list(image_shape(clean_folder))
        workspace.write_json(folder / "dataset.json", dataset)
        for name in (splits.MANIFEST, "normalizer.json", "dataset.json"):
            mlflow.log_artifact(str(folder / name))
        metrics = {f"split/{name}_items": len(parts[name]) for name in splits.SPLITS}
        tracking.log_metrics(metrics)
        return metrics

    inputs = {"clean": stage.manifest_digest(clean_folder)}
    return stage.execute(config, "split", ("data", "split", "normalize"), inputs, body, force)
