"""`init` on a CSV table: the target column and task, a group column, a time column and the split they imply."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pipelines.core.errors import DataError
from pipelines.data.propose import Choice, Proposal, listed, where
from pipelines.data.propose.columns import TARGET_NAMES, is_datetime, is_numeric, normal, present, read_csv, time_named

GROUP_NAMES = ("group", "subject", "patient", "user", "customer", "session", "participant", "person", "household",
               "family", "site", "device", "id")


def _pick_target(path: Path, columns: list[str], target: str) -> str:
    if target:
        if target not in columns:
            raise DataError(f"{path}: no column '{target}' (columns: {', '.join(map(str, columns))})")
        return target
    named = [column for column in columns if normal(column) in TARGET_NAMES]
    if len(named) == 1:
        return named[0]
    why = f"several are named like one: {', '.join(named)}" if named else \
        f"none is named {', '.join(TARGET_NAMES[:7])} or the like"
    raise DataError(f"{path}: cannot tell the target column ({why}); name it: --target COLUMN (columns: "
                    f"{', '.join(map(str, columns))})")


def propose(path: Path, shown: str, target: str = "", **_) -> Proposal:
    """The table's target (named like one, or given), its task, an id column that groups rows (or a row id kept
    out of the features) and a time column (then a temporal split)."""
    frame = read_csv(path)
    columns = list(frame.columns)
    given = bool(target)
    target = _pick_target(path, columns, target)
    values = present(frame[target])
    distinct = values.nunique()
    if distinct < 2:
        single = values.iloc[0] if len(values) else ""
        raise DataError(f"{path}: target column '{target}' holds a single value {single!r}; name another: --target "
                        "COLUMN")
    regression = is_numeric(frame[target]) and distinct > 20
    choices = [Choice("data.source", "csv", "a CSV file: a table, one row per item"),
               Choice("data.path", shown, where(shown)),
               Choice("data.target", target, "as given (--target)" if given else "the one column named like a target "
                      "(--target COLUMN names another)")]
    if regression:
        choices.append(Choice("data.task", "regression", f"'{target}' holds {distinct} distinct numbers: a quantity "
                              "to predict"))
    else:
        counts = Counter(values)
        choices.append(Choice("data.task", "classification", f"'{target}' holds {distinct} classes: "
                              f"{listed(counts)} rows"))
    rest = [column for column in columns if column != target]
    rows = len(frame)
    times = [column for column in rest if (time_named(column) and is_numeric(frame[column])
                                           and frame[column].nunique() >= max(3, rows // 10))
             or is_datetime(frame[column])]
    time = times[0] if times else ""
    ids = [column for column in rest if column != time and (normal(column) in GROUP_NAMES or re.search(
        r"(^|[_\-\s.])id$", column, re.I) or re.search(r"[a-z](Id|ID)$", column))]
    groups = [column for column in ids if 2 <= frame[column].nunique() < rows]
    unique = [column for column in ids if frame[column].nunique() == rows]
    if groups:
        column = groups[0]
        choices.append(Choice("data.group_column", column, f"'{column}' names an entity and repeats "
                              f"({frame[column].nunique()} values over {rows} rows); it is not a feature"))
    elif unique:
        choices.append(Choice("data.group_column", unique[0], f"'{unique[0]}' is unique per row, a row id: named "
                              "here it stays out of the features (each row is its own group)"))
    if time:
        choices.append(Choice("data.time_column", time, f"'{time}' orders the rows in time"
                              + (f" (also time-like: {', '.join(times[1:])})" if len(times) > 1 else "")))
        choices.append(Choice("split.strategy", "temporal", "the latest rows are the test split, as a deployed "
                              "model meets the future; stratified (with no time_column) would mix the times"))
    elif groups:
        choices.append(Choice("split.group", "column", f"the rows of one '{groups[0]}' stay in one split, so the "
                              f"test never meets a {groups[0]} seen in training"))
    choices.append(Choice("model.architecture", "mlp", "tables are read by the multilayer perceptron"))
    numeric = sum(is_numeric(frame[column]) for column in rest)
    found = (f"a table, {rows} rows and {len(columns)} columns ({numeric} numeric, {len(rest) - numeric} other "
             f"besides the target); {'regression' if regression else 'classification'} of '{target}'")
    return Proposal("table", found, tuple(choices))
