"""Plots are files: each figure is written as PNG atomically (temp file, then rename) and closed."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from pipelines.core import workspace


def save(figure: plt.Figure, path: str | Path, dpi: int = 90, tight: bool = True) -> Path:
    """Writes `figure` to `path` as PNG (laid out tightly unless `tight` is False) and closes it."""
    if tight:
        figure.tight_layout()
    with workspace.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    plt.close(figure)
    return Path(path)
