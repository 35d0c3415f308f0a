"""What `init` tests CSV columns for: text cells as read, numbers, date-times, names that say time or target."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from pipelines.core import config as config_module
from pipelines.data import signals

TARGET_NAMES = ("target", "label", "labels", "class", "classes", "y", "outcome", "category", "diagnosis", "result",
                "response")
TIME_NAMES = ("t", "ts", "time", "date", "datetime", "timestamp", "seconds", "secs", "sec")
MISSING = config_module.DataConfig().missing_values


def read_csv(path: Path) -> pd.DataFrame:
    """The file as stripped text cells; a file pandas cannot read is named with pandas' reason."""
    frame = signals.read_text(path, [])
    return frame.apply(lambda column: column.str.strip())


def present(column: pd.Series) -> pd.Series:
    """The cells that are not a missing-value token (data.missing_values' defaults)."""
    return column[~column.isin(MISSING)]


def is_numeric(column: pd.Series) -> bool:
    cells = present(column)
    return bool(len(cells)) and bool(pd.to_numeric(cells, errors="coerce").notna().all())


def is_datetime(column: pd.Series) -> bool:
    cells = present(column)
    if not len(cells) or is_numeric(column) or not cells.str.contains(r"\d[-:/]\d", regex=True).all():
        return False
    return bool(pd.to_datetime(cells, errors="coerce", format="ISO8601").notna().all())


def normal(name) -> str:
    """A column name as compared with the names above: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def time_named(name: str) -> bool:
    plain = normal(name)
    return plain in TIME_NAMES or plain.endswith(("date", "time", "timestamp", "day")) or \
        plain.startswith(("date", "time"))
