"""Tables: scikit-learn's embedded tables or a CSV file.

Analyze profiles the columns and fits a random forest baseline; clean applies the declared column rules
(ranges, derived values), drops duplicate and conflicting rows and constant columns; split fits the
imputation, bins, one-hot encoding and scaling on the training rows only and stores each split's encoded
rows. The bundle carries the fitted preprocessing for the device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

import deploy.edge.predict as edge
from pipelines.core import config as config_module
from pipelines.core import figures, workspace
from pipelines.core.errors import DataError
from pipelines.data import duplicates, given, health, sources, splits, tables
from pipelines.data.splits import Assignment

NAME = "table"


def read(config: config_module.Config) -> sources.RawTable:
    """The table; a declared time order that the split would ignore is a warning (printed, and in analyze's
    report and clean's log)."""
    raw = sources.load(config.data, config.root, config.split)
    if config.data.time_column and config.split.strategy != "temporal":
        warning = (f"data.time_column '{config.data.time_column}' orders the rows in time, but split.strategy is "
                   f"'{config.split.strategy}': later rows may train a model tested on earlier ones. Set "
                   "split.strategy: temporal, or leave data.time_column out")
        raw.warnings.append(warning)
        print(f"warning: {warning}", file=sys.stderr)
    return raw


def profile(raw: sources.RawTable, config: config_module.Config, folder: Path) -> tuple[dict, dict]:
    report = tables.profile(raw, config.data)
    report["baseline"] = baseline(raw, config)
    if config.health.action != "none" and raw.task == "classification":  # label issues, outside the test share
        groups = raw.groups.to_numpy() if raw.groups is not None and config.split.group == "column" else None
        report["label_health"] = health.summary(raw.features, raw.target.to_numpy(), groups, raw.ids,
                                                raw.class_names, config,
                                                tables.preprocessor(raw.features, config.data.columns))
    _correlation_plot(raw, folder / "correlations.png")
    return report, {}


def baseline(raw: sources.RawTable, config: config_module.Config) -> dict:
    """Random forest with feature importances, cross-validated (accuracy, or MAE for regression) on the rows
    outside the share the split would hold out for test, with its grouping and time order
    (`splits.analysis_folds`)."""
    data, seed = config.data, config.split.seed
    classification = raw.task == "classification"
    forest = (RandomForestClassifier if classification else RandomForestRegressor)(n_estimators=100,
                                                                                  random_state=seed)
    model = make_pipeline(tables.preprocessor(raw.features, data.columns), forest)
    scoring = "accuracy" if classification else "neg_mean_absolute_error"
    groups = raw.groups.to_numpy() if raw.groups is not None and config.split.group == "column" else None
    pool, folds, how = splits.analysis_folds(len(raw.target), raw.target.to_numpy() if classification else None,
                                             groups,
                                             raw.times.to_numpy() if raw.times is not None else None, config.split)
    features, target = raw.features.iloc[pool], raw.target.iloc[pool]
    scores = cross_val_score(model, features, target, cv=folds, scoring=scoring)
    model.fit(features, target)
    names = model[0].get_feature_names_out()
    ranked = sorted(zip(model[-1].feature_importances_, names), reverse=True)[:10]
    sign = 1.0 if classification else -1.0
    return {"model": "random forest (100 trees)", "metric": "accuracy" if classification else "mae",
            "cv_folds": len(folds), "evaluated_on": how, "score_mean": float(sign * scores.mean()),
            "score_std": float(scores.std()),
            "feature_importances": [[name, float(value)] for value, name in ranked]}


def _correlation_plot(raw: sources.RawTable, path: Path) -> None:
    numeric = raw.features.select_dtypes("number")
    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(numeric.corr().to_numpy(), cmap="coolwarm", vmin=-1, vmax=1)
    axis.set_xticks(range(len(numeric.columns)), numeric.columns, rotation=90, fontsize=6)
    axis.set_yticks(range(len(numeric.columns)), numeric.columns, fontsize=6)
    figure.colorbar(image)
    axis.set_title("Pearson correlation")
    figures.save(figure, path)


def _apply_column_rules(frame: pd.DataFrame, rules: dict, ids: tuple, log: list) -> pd.Series:
    """Declared ranges, then derived values (so a value the range rule invalidates is derived too, before any
    imputation), by the edge predictor's own `column_rules`; returns the mask of rows to drop."""
    names = [name for name in {*rules, *(rule.derive_from for rule in rules.values() if rule.derive_from)}
             if name in frame]
    values = {name: pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, copy=True)
              for name in names}
    drop, events = edge.column_rules(values, {name: config_module.to_dict(rule) for name, rule in rules.items()},
                                     len(frame))
    for row, name, what, old, new in events:
        rule = rules[name]
        if what == "derive":
            log.append((ids[row], f"columns.{name}.impute=derive", "changed",
                        f"missing {name} = {rule.derive_offset:g} + {rule.derive_scale:g} * {rule.derive_from} = "
                        f"{tables.plain(new)}"))
            continue
        action, result = {"drop": ("dropped", "row dropped"), "clip": ("changed", f"clipped to {new:g}")}.get(
            rule.out_of_range, ("changed", "set missing (imputed after the split)"))
        log.append((ids[row], f"columns.{name}.out_of_range={rule.out_of_range}", action,
                    f"{name}={tables.plain(old)} outside [{tables.plain(rule.min)}, {tables.plain(rule.max)}]: "
                    f"{result}"))
    for name in rules:
        changed = sorted({row for row, column, what, _, _ in events if column == name and not drop[row]})
        if changed:
            frame.loc[frame.index[changed], name] = values[name][changed]
    return pd.Series(drop, index=frame.index)


def _quarantine(raw: sources.RawTable, folder: Path, log: list) -> None:
    """The CSV lines `data.bad_lines: skip` set aside: `quarantine.csv` (line, fields, text) and a log row each."""
    if not raw.quarantined:
        return
    workspace.write_text(folder / "quarantine.csv", workspace.csv_text(("line", "fields", "text"), raw.quarantined))
    for line, fields, _ in raw.quarantined:
        log.append((f"line-{line}", "data.bad_lines=skip", "dropped",
                    f"{fields} fields, not the header's count: set aside in quarantine.csv"))


def clean(raw: sources.RawTable, config: config_module.Config, folder: Path) -> tuple[list, dict, dict]:
    frame = raw.features.copy()
    tables._check_columns(frame, config.data.columns, raw.origin)
    log = [("-", "source", "changed", warning) for warning in raw.warnings]
    drop = _apply_column_rules(frame, config.data.columns, raw.ids, log)
    _quarantine(raw, folder, log)
    if config.clean.missing_rows == "drop":
        for row in np.flatnonzero(frame.isna().any(axis=1).to_numpy() & ~drop.to_numpy()):
            drop.iloc[row] = True
            empty = [str(column) for column in frame.columns[frame.iloc[row].isna().to_numpy()]]
            log.append((raw.ids[row], "clean.missing_rows=drop", "dropped", f"missing {', '.join(empty)}"))
    # identical means identical in every column: two visits of one person on two days are two rows
    compared = frame.assign(**{name: values.to_numpy() for name, values in (("__group", raw.groups),
                                                                            ("__time", raw.times))
                               if values is not None})
    hashes = tables.row_hashes(compared, raw.target)
    feature_hashes = tables.row_hashes(compared, pd.Series([""] * len(frame)))
    duplicate_rules = config.clean
    labels = raw.target.to_numpy()
    shared = given.across(hashes, raw.given_split)  # copies in two given splits: split's leakage check stops
    for index, (rule, detail) in duplicates.find_drops(hashes, labels, duplicate_rules, raw.ids,
                                                       raw.class_names).items():
        if index in shared and rule == "drop_exact_duplicates":
            continue
        drop.iloc[index] = True
        log.append((raw.ids[index], rule, "dropped", detail))
    if raw.task == "classification" and duplicate_rules.drop_label_conflicts:
        for index, (rule, detail) in duplicates.find_drops(feature_hashes, labels.astype(int), duplicate_rules,
                                                           raw.ids, raw.class_names).items():
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
    if raw.given_split is not None:  # the table's own split column (split.strategy: predefined)
        table["__split"] = np.asarray(raw.given_split)[keep]
    with workspace.atomic_path(folder / "table.parquet") as temporary:
        table.to_parquet(temporary, index=False)
    return log, {"items_in": len(frame), "items_out": int(keep.sum()), "dropped": int((~keep).sum()),
                 "changed": sum(1 for row in log if row[2] == "changed"), "quarantined": len(raw.quarantined)}, {}


def _imputation_log(frame: pd.DataFrame, ids: np.ndarray, fitted: list[dict]) -> str:
    """Every cell the train-fitted imputer fills, with its rule and value (clean logs its own changes)."""
    rows = []
    for entry in fitted:
        for index in np.flatnonzero(frame[entry["column"]].isna().to_numpy()):
            rows.append((str(ids[index]), f"impute={entry['impute']}", "changed",
                         f"missing {entry['column']} -> {entry['fill']} (fitted on train)"))
    return workspace.csv_text(workspace.LOG_HEADER, rows)


def _train_rules(frame: pd.DataFrame, parts: dict, ids: np.ndarray, data: config_module.DataConfig,
                 folder: Path) -> tuple[pd.DataFrame, dict, dict]:
    """Feature selection and the outlier rules, both learned on the training rows only, logged in
    `table_rules_log.csv`; returns the frame, the parts (less the training rows an outlier rule dropped) and the
    learned fences as device column rules."""
    dropped, log = tables.select_features(frame.iloc[parts["train"]], data)
    frame = frame.drop(columns=dropped)
    if frame.shape[1] == 0:
        raise DataError(f"feature selection (data.drop_near_constant, data.drop_duplicate_columns, "
                        f"data.drop_correlated) left no column: dropped {dropped}")
    rules = {name: rule for name, rule in data.columns.items() if name in frame}
    frame, left_out, outlier_log, learned = tables.outlier_rules(frame, parts["train"], rules, ids)
    if len(left_out):
        parts = {**parts, "train": parts["train"][~np.isin(parts["train"], left_out)]}
    workspace.write_text(folder / "table_rules_log.csv", workspace.csv_text(workspace.LOG_HEADER, log + outlier_log))
    return frame, parts, learned


def _slices(table: pd.DataFrame, data: config_module.DataConfig) -> np.ndarray | None:
    """Each row's value of `data.slice_column` as text (a feature, the group or the time column), or None.

    Raises:
        DataError: the column is not in the cleaned table.
    """
    name = data.slice_column
    if not name:
        return None
    column = "__group" if name == data.group_column else "__time" if name == data.time_column else name
    if column not in table:
        raise DataError(f"data.slice_column: no column '{name}' in the cleaned table (columns: "
                        f"{[c for c in table.columns if not c.startswith('__')]})")
    return np.array(table[column].astype(str).tolist(), dtype=str)


def split(clean_folder: Path, dataset: dict, config: config_module.Config, folder: Path,
          used: set[str] = frozenset()) -> tuple[Assignment, dict]:
    """Rows with identical content (and, when asked, rows of one `data.group_column` group) stay in one split;
    the preprocessing is fitted on the training rows and every split is stored encoded."""
    table = pd.read_parquet(clean_folder / "table.parquet")
    groups = np.array(table["__group"].astype(str).tolist(), dtype=str) if "__group" in table else None
    times = table["__time"].to_numpy() if "__time" in table else None
    given_split = table["__split"].astype(str).to_numpy() if "__split" in table else None
    frame = table.drop(columns=[c for c in ("__target", "__id", "__group", "__time", "__split") if c in table])
    ids = np.array(table["__id"].astype(str).tolist(), dtype=str)
    y = table["__target"].to_numpy()
    stratify = y if config.split.strategy in ("stratified", "predefined") and dataset["task"] == "classification" \
        else None
    content = tables.row_hashes(frame, pd.Series(y))
    column_groups = groups if config.split.group == "column" else None
    grouping = splits.group_ids(content, column_groups)
    barred = splits.barred_items(content, used)
    if config.split.strategy == "predefined":  # the table's own split column; val carved from train when absent
        if given_split is None:
            raise DataError(f"{clean_folder}: the table names no split of its own; split.strategy predefined needs "
                            f"the column split.column ('{config.split.column}')")
        parts = splits.predefined(given_split, stratify, grouping, config.split, barred, ids, "rows")
    else:
        splits.check_strata(stratify, ids, dataset["class_names"])
        parts = splits.assign(stratify, grouping, times, config.split, barred, ids)
    if config.split.strategy not in ("temporal", "predefined"):
        splits.check_ratios(parts, grouping, ids, config.split)
    frame, parts, learned = _train_rules(frame, parts, ids, config.data, folder)
    transformer = tables.preprocessor(frame, config.data.columns, config.normalize).fit(frame.iloc[parts["train"]])
    dataset["feature_names"] = [str(name) for name in transformer.get_feature_names_out()]
    fitted = tables.describe_fitted(transformer)
    workspace.write_json(folder / "preprocessing.json", fitted)
    workspace.write_text(folder / "imputation_log.csv", _imputation_log(frame, ids, fitted))
    x = transformer.transform(frame).astype(np.float32)
    y = y.astype(np.float32 if dataset["task"] == "regression" else np.int64)
    sliced = _slices(table, config.data)
    for name in splits.SPLITS:
        workspace.save_arrays(folder, name, x=x[parts[name]], y=y[parts[name]], ids=ids[parts[name]],
                              **({"slice": sliced[parts[name]]} if sliced is not None else {}))
    if sliced is not None:
        dataset["slice_column"] = config.data.slice_column
    dataset["input_shape"] = list(x.shape[1:])
    # what a raw row goes through before the fitted preprocessing, for the edge bundle (see `preprocessing`)
    dataset["column_rules"] = {name: {**config_module.to_dict(rule), **learned.get(name, {})}
                               for name, rule in config.data.columns.items()}
    dataset["missing_values"] = list(config.data.missing_values)
    hashes = [splits.item_hash(row, label.item()) for row, label in zip(x, y)]
    statistics = {"fitted_on": "train", "method": config.normalize.method, "scope": "in_preprocessing",
                  "mean": [0.0], "variance": [1.0]}  # scaled inside the fitted preprocessing
    return Assignment(parts, ids, y, hashes, grouping, stratify, content=content, groups=column_groups,
                      times=times), statistics


BASELINE = "logistic"


def features(x) -> np.ndarray:
    """The encoded rows themselves (imputed, encoded and scaled as fitted on train)."""
    return x.array()


def preprocessing(dataset: dict, split_folder: Path) -> dict:
    """A raw row's way into the model, as training went: the missing-value tokens, the declared column rules
    (ranges, clip/missing/drop, derive), the fitted imputation, encoding and scaling, the expected columns; an
    unseen category is encoded as none of the known ones, as the training encoder does."""
    return {"kind": "table", "feature_names": dataset["feature_names"],
            "columns": workspace.read_json(split_folder / "preprocessing.json"),
            "rules": dataset.get("column_rules", {}), "missing_values": dataset.get("missing_values", [""]),
            "unseen_category": "encoded as none of the known categories"}
