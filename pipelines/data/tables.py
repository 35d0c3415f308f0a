"""Tables: profiling, the row-level cleaning rules, and the preprocessing fitted on the training split.

Clean applies only rules that need no statistics (declared ranges, values derived from another column,
duplicate rows, constant columns). Everything fitted (median or most-frequent imputation, category
vocabularies, quantile bins) is fitted by split on the training split only, with scikit-learn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import KBinsDiscretizer, MinMaxScaler, OneHotEncoder, StandardScaler

from pipelines.core import config as config_module
from pipelines.core.errors import DataError
from pipelines.data import sources


def _derived(frame: pd.DataFrame, rule: config_module.ColumnRule) -> pd.Series:
    return rule.derive_offset + rule.derive_scale * pd.to_numeric(frame[rule.derive_from], errors="coerce")


def _check_columns(frame: pd.DataFrame, rules: dict[str, config_module.ColumnRule], origin: str) -> None:
    for name, rule in rules.items():
        for column in (name, rule.derive_from):
            if column and column not in frame.columns:
                raise DataError(f"{origin}: data.columns names column '{column}', which the table does not have")


def violations(frame: pd.DataFrame, rules: dict[str, config_module.ColumnRule]) -> dict:
    """Rows outside each column's declared range, and rows inconsistent with a derived-from relation."""
    found = {"range": {}, "inconsistent": {}}
    for name, rule in rules.items():
        values = pd.to_numeric(frame[name], errors="coerce")
        outside = pd.Series(False, index=frame.index)
        if rule.min is not None:
            outside |= values < rule.min
        if rule.max is not None:
            outside |= values > rule.max
        if outside.any():
            found["range"][name] = [int(row) for row in np.flatnonzero(outside)]
        if rule.derive_from:
            gap = (values - _derived(frame, rule)).abs()
            inconsistent = gap > rule.derive_tolerance
            if inconsistent.any():
                found["inconsistent"][name] = [int(row) for row in np.flatnonzero(inconsistent)]
    return found


def plain(value) -> str:
    """A number as people write it (39, 0.5, 'n/a'), never a NumPy repr such as np.float64(39.0)."""
    if value is None or isinstance(value, str):
        return str(value)
    value = value.item() if isinstance(value, np.generic) else value
    return f"{value:g}" if isinstance(value, float) else str(value)


def profile(raw: sources.RawTable, data: config_module.DataConfig) -> dict:
    frame = raw.features
    _check_columns(frame, data.columns, raw.origin)
    numeric = frame.select_dtypes("number")
    quartiles = numeric.quantile([0.25, 0.75])
    spread = quartiles.loc[0.75] - quartiles.loc[0.25]
    outliers = ((numeric < quartiles.loc[0.25] - 1.5 * spread) | (numeric > quartiles.loc[0.75] + 1.5 * spread)).sum()
    categorical = [column for column in frame.columns if column not in numeric.columns]
    correlation = numeric.corr().abs()
    pairs = sorted(((correlation.iloc[i, j], a, b) for i, a in enumerate(correlation.columns)
                    for j, b in enumerate(correlation.columns) if i < j and not np.isnan(correlation.iloc[i, j])),
                   reverse=True)
    seen, duplicate_columns = {}, []
    for column in frame.columns:
        key = pd.util.hash_pandas_object(frame[column], index=False).sum()
        if key in seen and frame[column].equals(frame[seen[key]]):
            duplicate_columns.append([seen[key], column])
        seen.setdefault(key, column)
    rows = frame.assign(__target=raw.target)
    report = {
        "source": raw.origin, "kind": "table", "task": raw.task, "items": len(frame), "columns": len(frame.columns),
        "dtypes": {column: str(dtype) for column, dtype in frame.dtypes.items()},
        "missing": {column: int(count) for column, count in frame.isna().sum().items() if count},
        "ranges": {column: [float(numeric[column].min()), float(numeric[column].max())] for column in numeric},
        "outliers_iqr": {column: int(count) for column, count in outliers.items() if count},
        "constant_columns": [column for column in frame.columns if frame[column].nunique(dropna=False) <= 1],
        "duplicate_columns": duplicate_columns,
        "high_cardinality": {column: int(frame[column].nunique()) for column in categorical
                             if frame[column].nunique() > data.high_cardinality},
        "top_correlations": [[a, b, float(value)] for value, a, b in pairs[:10]],
        "duplicate_rows": int(rows.duplicated().sum()),
        "missing_tokens": raw.missing_tokens,
        "violations": {kind: {column: [raw.ids[row] for row in rows] for column, rows in found.items()}
                       for kind, found in violations(frame, data.columns).items()},
        "warnings": raw.warnings,
        "quarantined_lines": [line for line, _, _ in raw.quarantined],
    }
    if raw.task == "classification":
        counts = np.bincount(raw.target.to_numpy(dtype=int), minlength=len(raw.class_names))
        report["class_counts"] = {name: int(count) for name, count in zip(raw.class_names, counts)}
        report["imbalance_ratio"] = float(counts.max() / max(counts.min(), 1))
    else:
        report["target_summary"] = {key: float(value) for key, value in raw.target.describe().items()}
    return report


def preprocessor(frame: pd.DataFrame, rules: dict[str, config_module.ColumnRule],
                 normalize: config_module.NormalizeConfig | None = None) -> ColumnTransformer:
    """Imputation, quantile bins, one-hot encoding and per-feature scaling, to be fitted on the training split.

    Scaling lives here rather than in the model for tables: a full-int8 model quantizes its input tensor with
    one scale, and raw features on scales from 0.01 to 1000 would lose the small ones entirely.
    """
    transformers = []
    for column in frame.columns:
        rule = rules.get(column, config_module.ColumnRule())
        is_numeric = pd.api.types.is_numeric_dtype(frame[column])
        strategy = rule.impute if rule.impute in ("median", "most_frequent") else (
            "median" if is_numeric else "most_frequent")
        steps = [SimpleImputer(strategy=strategy)]
        if not is_numeric:
            steps.append(OneHotEncoder(handle_unknown="ignore", sparse_output=False))
        elif rule.bins:
            steps.append(KBinsDiscretizer(n_bins=rule.bins, encode="ordinal", strategy="quantile",
                                          quantile_method="averaged_inverted_cdf"))
        if is_numeric and normalize is not None:
            steps.append(StandardScaler() if normalize.method == "zscore" else MinMaxScaler())
        transformers.append((column, make_pipeline(*steps), [column]))
    return ColumnTransformer(transformers, verbose_feature_names_out=False)


def describe_fitted(transformer: ColumnTransformer) -> list[dict]:
    """What the fitted preprocessing does per column, in feature order, as JSON (a list: the order matters and
    JSON objects are written with sorted keys). The edge bundle applies it without scikit-learn."""
    described = []
    for column, pipeline, _ in transformer.transformers_:
        if column == "remainder":
            continue
        steps = dict(pipeline.named_steps)
        entry = {"column": column, "impute": steps["simpleimputer"].strategy,
                 "fill": np.asarray(steps["simpleimputer"].statistics_).tolist()[0]}
        if "onehotencoder" in steps:
            entry["categories"] = [str(value) for value in steps["onehotencoder"].categories_[0]]
        if "kbinsdiscretizer" in steps:
            entry["bin_edges"] = steps["kbinsdiscretizer"].bin_edges_[0].tolist()
        for name in ("standardscaler", "minmaxscaler"):
            if name in steps:  # x_scaled = (x - offset) / scale
                scaler = steps[name]
                offset = scaler.mean_ if name == "standardscaler" else scaler.data_min_
                scale = scaler.scale_ if name == "standardscaler" else 1.0 / scaler.scale_
                entry["offset"], entry["scale"] = float(offset[0]), float(scale[0])
        described.append(entry)
    return described


def row_hashes(frame: pd.DataFrame, target: pd.Series) -> list[str]:
    """Content hash per row (features and target), so identical rows share it."""
    import hashlib

    rows = frame.to_numpy(dtype=object)
    return [hashlib.sha256(("\x1f".join(map(str, row)) + "\x1e" + str(label)).encode()).hexdigest()
            for row, label in zip(rows, target.to_numpy(dtype=object))]


def learn_fences(train: pd.DataFrame, rules: dict[str, config_module.ColumnRule]) -> dict[str, tuple[float, float]]:
    """Per column with an `outliers` rule, the (low, high) fences from the training rows only: quartiles -/+
    `fence_factor` * IQR, or the `outlier_quantiles` (always for winsorize)."""
    fences = {}
    for name, rule in rules.items():
        if rule.outliers == "none" or name not in train:
            continue
        values = pd.to_numeric(train[name], errors="coerce").dropna()
        if values.empty:
            raise DataError(f"data.columns.{name}.outliers: column '{name}' has no numeric value in the training rows")
        if rule.fences == "quantile" or rule.outliers == "winsorize":
            low, high = values.quantile(list(rule.outlier_quantiles))
        else:
            first, third = values.quantile([0.25, 0.75])
            low, high = first - rule.fence_factor * (third - first), third + rule.fence_factor * (third - first)
        fences[name] = (float(low), float(high))
    return fences


def outlier_rules(frame: pd.DataFrame, train: np.ndarray, rules: dict[str, config_module.ColumnRule],
                  ids: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, list, dict]:
    """Applies the `outliers` rules with fences learned on the rows `train` (positions): clip and winsorize move a
    value to its fence, missing blanks it (the train-fitted imputer fills it), drop leaves a training row out
    (a validation or test row stays as it is: the device cannot drop its input).

    Returns:
        (the frame, the training positions dropped, log rows, the device's column rules: the fences as
        `min`/`max` with `out_of_range` clip or missing, the edge predictor's own definition).
    """
    fences = learn_fences(frame.iloc[train], rules)
    frame, log, device, dropped = frame.copy(), [], {}, set()
    in_train = np.zeros(len(frame), dtype=bool)
    in_train[train] = True
    for name, (low, high) in fences.items():
        action = rules[name].outliers
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, copy=True)
        outside = (values < low) | (values > high)
        where = f"[{plain(low)}, {plain(high)}] ({rules[name].fences if action != 'winsorize' else 'quantile'} " \
                "fences learned on train)"
        if action == "drop":
            for row in np.flatnonzero(outside & in_train):
                dropped.add(int(row))
                log.append((str(ids[row]), f"columns.{name}.outliers=drop", "dropped",
                            f"{name}={plain(values[row])} outside {where}: training row left out"))
            continue
        for row in np.flatnonzero(outside):
            new = float(np.clip(values[row], low, high)) if action in ("clip", "winsorize") else np.nan
            log.append((str(ids[row]), f"columns.{name}.outliers={action}", "changed",
                        f"{name}={plain(values[row])} outside {where}: "
                        f"{'set missing' if np.isnan(new) else f'clipped to {plain(new)}'}"))
            values[row] = new
        frame[name] = values
        device[name] = {"min": low, "max": high, "out_of_range": "missing" if action == "missing" else "clip"}
    return frame, np.array(sorted(dropped), dtype=np.int64), log, device


def select_features(train: pd.DataFrame, data: config_module.DataConfig) -> tuple[list[str], list]:
    """The columns to drop, judged on the training rows only: near-constant (`drop_near_constant`), equal to an
    earlier column (`drop_duplicate_columns`), highly correlated with an earlier numeric column
    (`drop_correlated`); and one cleaning-log row each."""
    dropped, log = [], []
    if data.drop_near_constant > 0:
        for column in train.columns:
            share = train[column].value_counts(dropna=False, normalize=True).iloc[0] if len(train) else 1.0
            if share >= data.drop_near_constant:
                dropped.append(column)
                log.append((f"column:{column}", "data.drop_near_constant", "dropped",
                            f"its most common value covers {share:.1%} of the training rows"))
    if data.drop_duplicate_columns:
        kept = [column for column in train.columns if column not in dropped]
        for position, column in enumerate(kept):
            twin = next((other for other in kept[:position] if other not in dropped
                         and train[column].equals(train[other])), None)
            if twin is not None:
                dropped.append(column)
                log.append((f"column:{column}", "data.drop_duplicate_columns", "dropped",
                            f"equal to column '{twin}' on the training rows"))
    if data.drop_correlated > 0:
        numeric = train[[column for column in train.select_dtypes("number").columns if column not in dropped]]
        correlation = numeric.corr().abs()
        for position, column in enumerate(numeric.columns):
            for other in numeric.columns[:position]:
                value = correlation.loc[column, other]
                if other not in dropped and not np.isnan(value) and value >= data.drop_correlated:
                    dropped.append(column)
                    log.append((f"column:{column}", "data.drop_correlated", "dropped",
                                f"|correlation| {value:.3f} with column '{other}' on the training rows"))
                    break
    return dropped, log
