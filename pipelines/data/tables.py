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
