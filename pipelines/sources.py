"""Data sources read into one representation: images (N, H, W, C), integer labels, class names, item ids."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipelines import config as config_module


@dataclasses.dataclass(frozen=True)
class RawImages:
    images: np.ndarray  # (N, H, W, C), raw values in [0, value_max]
    labels: np.ndarray  # (N,) int
    class_names: tuple[str, ...]
    ids: tuple[str, ...]
    value_max: float
    origin: str


def _digits() -> RawImages:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images[..., np.newaxis]
    return RawImages(
        images=images,
        labels=bunch.target.astype(np.int64),
        class_names=tuple(str(name) for name in bunch.target_names),
        ids=tuple(f"digits-{index:04d}" for index in range(len(images))),
        value_max=16.0,
        origin="sklearn.datasets.load_digits (8x8 grey levels 0-16, shipped inside scikit-learn)",
    )


SOURCES = {"digits": _digits}


def load(data: config_module.DataConfig) -> RawImages:
    """Reads the configured source; raw data is never modified."""
    return SOURCES[data.source]()
