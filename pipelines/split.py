"""split: train/val/test without leakage, a manifest with content hashes, and the train-only preprocessing.

Strategies: stratified (classification) or random, seeded; temporal (the latest rows go to test). Items that
share content (exact duplicates), near-duplicate images (perceptual-hash clusters found by clean) and, when
asked, rows of one `data.group_column` group always land in one split. A leakage check runs on every split
and fails the stage naming the items. The same config gives a byte-identical `split_manifest.json`.
Table preprocessing (imputation, bins, one-hot) and the normalizer are fitted on the training split only.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

from pipelines import config as config_module
from pipelines import duplicates, stage, tables, tracking, workspace

SPLITS = ("train", "val", "test")
MANIFEST = "split_manifest.json"


class LeakageError(ValueError):
    """Content, a near-duplicate cluster, a group or time order spans two splits."""


def item_hash(item: np.ndarray) -> str:
    """Content hash of one stored item (canonical uint8 image or encoded feature row)."""
    return workspace.sha256_bytes(np.ascontiguousarray(item).tobytes())


def group_ids(hashes: list[str], *relations: np.ndarray | None) -> np.ndarray:
    """One id per item; items sharing a content hash or a value of any relation share the id."""
    pairs = []
    for relation in (np.array(hashes), *[r for r in relations if r is not None]):
        first = {}
        for index, key in enumerate(relation.tolist()):
            pairs.append((first.setdefault(key, index), index))
    return duplicates.clusters(len(hashes), pairs)


def _holdout(indices: np.ndarray, fraction: float, labels: np.ndarray | None, groups: np.ndarray,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held out) with about `fraction` of the items held out, groups never cut."""
    if len(np.unique(groups[indices])) == len(indices):  # no group with two members: a plain split
        strata = labels[indices] if labels is not None else None
        rest, held = train_test_split(indices, test_size=fraction, stratify=strata, random_state=seed)
        return rest, held
    if labels is not None:
        folds = StratifiedGroupKFold(n_splits=max(2, round(1 / fraction)), shuffle=True, random_state=seed)
        rest, held = next(folds.split(indices, labels[indices], groups[indices]))
    else:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        rest, held = next(splitter.split(indices, groups=groups[indices]))
    return indices[rest], indices[held]


def assign(labels: np.ndarray | None, groups: np.ndarray, times: np.ndarray | None,
           rules: config_module.SplitConfig) -> dict[str, np.ndarray]:
    """Indices per split. `labels` is None unless stratifying."""
    indices = np.arange(len(groups))
    if rules.strategy == "temporal":
        order = np.argsort(times, kind="stable")
        n_test, n_val = round(rules.test_fraction * len(order)), round(rules.val_fraction * len(order))
        parts = {"train": order[: len(order) - n_test - n_val], "val": order[len(order) - n_test - n_val:
                 len(order) - n_test], "test": order[len(order) - n_test:]}
    else:
        rest, test = _holdout(indices, rules.test_fraction, labels, groups, rules.seed)
        train, val = _holdout(rest, rules.val_fraction / (1.0 - rules.test_fraction), labels, groups, rules.seed)
        parts = {"train": train, "val": val, "test": test}
    return {name: np.sort(part) for name, part in parts.items()}


def check_ratios(parts: dict, groups: np.ndarray, ids: np.ndarray, rules: config_module.SplitConfig) -> None:
    """Grouping can make the requested ratios impossible (one huge near-duplicate cluster, say): say so."""
    total = sum(len(part) for part in parts.values())
    wanted = {"train": 1.0 - rules.val_fraction - rules.test_fraction, "val": rules.val_fraction,
              "test": rules.test_fraction}
    keys, sizes = np.unique(groups, return_counts=True)
    # Groups make the ratios approximate; a split with under half or over twice its share is not a split.
    off = {name: len(parts[name]) / total for name in SPLITS
           if not 0.5 * wanted[name] <= len(parts[name]) / total <= 2.0 * wanted[name]}
    if off:
        largest = [str(ids[index]) for index in np.flatnonzero(groups == keys[sizes.argmax()])[:5]]
        got = ", ".join(f"{name} {share:.2f}" for name, share in off.items())
        raise ValueError(f"split: groups are too large for the requested ratios (got {got}); the largest group "
                         f"holds {sizes.max()} of {total} items, e.g. {largest}. Lower "
                         "data.near_duplicate_distance, or check data.group_column")


def folds(parts: dict, labels: np.ndarray | None, groups: np.ndarray, rules: config_module.SplitConfig) -> dict:
    """item index -> fold number over train+val, for cross-validated search."""
    pool = np.sort(np.concatenate([parts["train"], parts["val"]]))
    grouped = len(np.unique(groups[pool])) < len(pool)
    if labels is not None:
        splitter = (StratifiedGroupKFold(rules.folds, shuffle=True, random_state=rules.seed) if grouped
                    else StratifiedKFold(rules.folds, shuffle=True, random_state=rules.seed))
    else:
        splitter = GroupKFold(rules.folds) if grouped else KFold(rules.folds, shuffle=True, random_state=rules.seed)
    assigned = {}
    for number, (_, held) in enumerate(splitter.split(pool, labels[pool] if labels is not None else None,
                                                      groups[pool] if grouped else None)):
        assigned.update({int(pool[index]): number for index in held})
    return assigned


def check_leakage(items: list[dict], temporal: bool = False) -> None:
    """Raises LeakageError naming the items when content, a cluster or a group spans splits, or time runs back."""
    problems = []
    content_key = "content" if items and "content" in items[0] else "sha256"
    for key, what in ((content_key, "content"), ("cluster", "near-duplicate cluster"), ("group", "group")):
        spans: dict = {}
        for item in items:
            if key in item:
                spans.setdefault(item[key], []).append(item)
        for members in spans.values():
            if len({item["split"] for item in members}) > 1:
                named = ", ".join(f"{item['id']} ({item['split']})" for item in members[:6])
                problems.append(f"{what} spans splits: {named}")
    times = {name: [item["time"] for item in items if item["split"] == name and "time" in item] for name in SPLITS}
    if temporal and times["train"] and times["test"] and max(times["train"]) > min(times["test"]):
        late = [item["id"] for item in items if item["split"] == "train" and item["time"] > min(times["test"])]
        problems.append(f"temporal order broken: train items {late[:6]} are later than the earliest test item")
    if problems:
        raise LeakageError(f"leakage check failed ({len(problems)} problem(s)): " + "; ".join(problems[:10]))


def normalizer(x_train: np.ndarray, settings: config_module.NormalizeConfig, per_feature: bool) -> dict:
    """Statistics for a Keras Normalization layer, fitted on the training split only.

    Tables are scaled in their fitted preprocessing instead (see tables.preprocessor), so their model needs none.
    """
    axis = tuple(range(x_train.ndim - 1)) if per_feature or settings.scope == "per_channel" else None
    values = x_train.astype(np.float64)
    if settings.method == "zscore":
        mean, variance = values.mean(axis=axis), values.var(axis=axis)
    else:
        low, high = values.min(axis=axis), values.max(axis=axis)
        mean, variance = low, (high - low) ** 2
    variance = np.where(np.asarray(variance) > 0, variance, 1.0)
    return {"fitted_on": "train", "method": settings.method, "scope": "per_feature" if per_feature else settings.scope,
            "mean": np.atleast_1d(mean).tolist(), "variance": np.atleast_1d(variance).tolist()}


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
    if dataset["kind"] == "images":
        x, y, ids, cluster = workspace.load_arrays(folder, "clean", "x", "y", "ids", "cluster")
        return x, y, ids, cluster, None, None
    table = pd.read_parquet(folder / "table.parquet")
    groups = np.array(table["__group"].astype(str).tolist(), dtype=str) if "__group" in table else None
    times = table["__time"].to_numpy() if "__time" in table else None
    frame = table.drop(columns=[c for c in ("__target", "__id", "__group", "__time") if c in table])
    ids = np.array(table["__id"].astype(str).tolist(), dtype=str)
    return frame, table["__target"].to_numpy(), ids, None, groups, times


def _manifest(ids, labels, hashes, content, parts, cluster, groups, times, fold_of) -> dict:
    items = []
    for name in SPLITS:
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
            if int(index) in fold_of:
                item["fold"] = fold_of[int(index)]
            items.append(item)
    items.sort(key=lambda item: item["id"])
    return {"counts": {name: int(len(parts[name])) for name in SPLITS}, "items": items}


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Splits the cleaned data, checks for leakage, fits preprocessing and the normalizer on train."""
    clean_folder, _ = stage.upstream(config, "clean", "split")

    def body(folder: Path) -> dict:
        dataset = workspace.read_json(clean_folder / "dataset.json")
        x, y, ids, cluster, groups, times = _load_clean(clean_folder, dataset)
        is_table = dataset["kind"] == "table"
        raw_hashes = tables.row_hashes(x, pd.Series(y)) if is_table else [item_hash(image) for image in x]
        column_groups = groups if config.split.group == "column" else None
        grouping = group_ids(raw_hashes, cluster, column_groups)
        stratify = y if config.split.strategy == "stratified" and dataset["task"] == "classification" else None
        parts = assign(stratify, grouping, times, config.split)
        if config.split.strategy != "temporal":
            check_ratios(parts, grouping, ids, config.split)
        if is_table:
            transformer = tables.preprocessor(x, config.data.columns, config.normalize).fit(x.iloc[parts["train"]])
            dataset["feature_names"] = [str(name) for name in transformer.get_feature_names_out()]
            fitted = tables.describe_fitted(transformer)
            workspace.write_json(folder / "preprocessing.json", fitted)
            workspace.write_text(folder / "imputation_log.csv", _imputation_log(x, ids, fitted))
            x = transformer.transform(x).astype(np.float32)
            y = y.astype(np.float32 if dataset["task"] == "regression" else np.int64)
        fold_of = folds(parts, stratify, grouping, config.split) if config.split.folds else {}
        for name in SPLITS:
            index = parts[name]
            workspace.save_arrays(folder, name, x=x[index], y=y[index], ids=ids[index])
        manifest = _manifest(ids, y, [item_hash(row) for row in x], raw_hashes if is_table else None, parts,
                             cluster, column_groups, times, fold_of)
        check_leakage(manifest["items"], temporal=config.split.strategy == "temporal")
        workspace.write_json(folder / MANIFEST, manifest)
        statistics = (normalizer(x[parts["train"]], config.normalize, per_feature=False) if not is_table else
                      {"fitted_on": "train", "method": config.normalize.method, "scope": "in_preprocessing",
                       "mean": [0.0], "variance": [1.0]})
        workspace.write_json(folder / "normalizer.json", statistics)
        dataset["input_shape"] = list(x.shape[1:])
        workspace.write_json(folder / "dataset.json", dataset)
        for name in (MANIFEST, "normalizer.json", "dataset.json"):
            mlflow.log_artifact(str(folder / name))
        metrics = {f"split/{name}_items": len(parts[name]) for name in SPLITS}
        tracking.log_metrics(metrics)
        return metrics

    inputs = {"clean": stage.manifest_digest(clean_folder)}
    return stage.execute(config, "split", ("data", "split", "normalize"), inputs, body, force)
