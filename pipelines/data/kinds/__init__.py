"""Data kinds: one adapter per kind (images, tables, sensor signals), one protocol, one registry.

Stages never ask which kind they hold: they look the adapter up, by the source's name (`for_source`) before
clean, by `dataset.json`'s `kind` (`get`) after it, and call the protocol below. Adding a kind (audio, say)
means one module beside these three and one line in `KINDS` (CONTRIBUTING.md walks through it).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipelines.core import config as config_module
from pipelines.core.errors import DataError
from pipelines.data.splits import Assignment

# kind name -> (module, the `data.source` values it reads)
KINDS = {
    "images": ("pipelines.data.kinds.images", config_module.IMAGE_SOURCES),
    "table": ("pipelines.data.kinds.tables", config_module.TABLE_SOURCES),
    "signals": ("pipelines.data.kinds.signals", config_module.SIGNAL_SOURCES),
}


class Kind(Protocol):
    """What every kind module provides."""

    NAME: str

    def read(self, config: config_module.Config) -> Any:
        """The raw source (`data.classes` applied), or a DataError naming the file, row or field."""

    def profile(self, raw: Any, config: config_module.Config, folder: Path) -> tuple[dict, dict]:
        """(analysis report with a `baseline`, its headline metrics); plots go into `folder`."""

    def clean(self, raw: Any, config: config_module.Config, folder: Path) -> tuple[list, dict, dict]:
        """Writes the canonical data into `folder`; (cleaning-log rows, counts, fields for dataset.json)."""

    def split(self, clean_folder: Path, dataset: dict, config: config_module.Config, folder: Path,
              used: set[str]) -> tuple[Assignment, dict]:
        """Assigns items to train/val/test without leakage, writes each split's inputs (and any preprocessing
        fitted on train) into `folder`; (the assignment, the normalizer's statistics from train only).
        Items whose content hash is in `used` (an earlier test split's, `splits.barred_items`) never go to test.
        Updates `dataset` (input_shape, where the inputs live)."""

    BASELINE: str  # the classical model of the export gate on `features`: "logistic" or "forest"

    def features(self, x: Any) -> np.ndarray:
        """A cheap fixed-length representation of each item of a split's reader (thumbnails, encoded rows,
        window statistics): what the classical baseline of the export gate is fitted on."""

    def preprocessing(self, dataset: dict, split_folder: Path) -> dict:
        """What a device does to a raw input before the model: the bundle's `preprocessing` entry."""


def get(name: str) -> Kind:
    """The adapter of a kind named in dataset.json."""
    if name not in KINDS:
        raise DataError(f"unknown data kind {name!r} (known: {', '.join(KINDS)})")
    return importlib.import_module(KINDS[name][0])


def for_source(source: str) -> Kind:
    """The adapter that reads `data.source`."""
    for name, (_, sources) in KINDS.items():
        if source in sources:
            return get(name)
    raise DataError(f"data.source: no data kind reads {source!r}")
