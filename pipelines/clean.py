"""clean: raw -> canonical images (uint8, square, configured size and channels), with a cleaning log.

Rules come from the config (`clean.*`). Every dropped or changed item is listed in `cleaning_log.csv` with
the rule that did it: nothing vanishes silently. Raw data is never modified.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import mlflow
import numpy as np
from PIL import Image

from pipelines import analyze, sources, stage, tracking, workspace
from pipelines import config as config_module

# The same resampling filter must be used by the edge predictor (deploy/edge/predict.py).
RESAMPLE = Image.Resampling.BICUBIC


def to_canonical(image: np.ndarray, value_max: float, size: int) -> np.ndarray:
    """One raw (H, W, 1) image -> uint8 (size, size, 1), values scaled from [0, value_max] to [0, 255]."""
    scaled = np.clip(np.rint(image[..., 0] * (255.0 / value_max)), 0, 255).astype(np.uint8)
    resized = Image.fromarray(scaled).resize((size, size), RESAMPLE)
    return np.asarray(resized, dtype=np.uint8)[..., np.newaxis]


def find_drops(images: np.ndarray, labels: np.ndarray, rules: config_module.CleanConfig) -> dict[int, tuple]:
    """index -> (rule, detail) for every item the rules drop."""
    drops = {}
    for group in analyze.duplicate_groups(images):
        conflicting = len(set(labels[group].tolist())) > 1
        if conflicting and rules.drop_label_conflicts:
            for index in group:
                drops[index] = ("drop_label_conflicts", f"same image carries labels {sorted(set(labels[group]))}")
        elif rules.drop_exact_duplicates:
            for index in group[1:]:
                drops[index] = ("drop_exact_duplicates", f"identical to item index {group[0]}")
    return drops


def _log_csv(rows: list[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "rule", "action", "detail"])
    writer.writerows(rows)
    return buffer.getvalue()


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Converts every raw image to canonical form and applies the drop rules."""

    def body(folder: Path) -> dict:
        raw = sources.load(config.data)
        size = config.data.image_size
        images = np.stack([to_canonical(image, raw.value_max, size) for image in raw.images])
        drops = find_drops(images, raw.labels, config.clean)
        log = [(raw.ids[index], rule, "dropped", detail) for index, (rule, detail) in sorted(drops.items())]
        log += [(item, "canonical_form", "changed", f"{raw.images.shape[1]}x{raw.images.shape[2]} "
                 f"0-{raw.value_max:g} -> {size}x{size} uint8 0-255") for item in raw.ids]
        keep = np.array([index for index in range(len(images)) if index not in drops], dtype=np.int64)
        workspace.save_arrays(folder, "clean", x=images[keep], y=raw.labels[keep],
                              ids=np.array(raw.ids, dtype=str)[keep])
        workspace.write_json(folder / "classes.json", list(raw.class_names))
        workspace.write_text(folder / "cleaning_log.csv", _log_csv(log))
        mlflow.log_artifact(str(folder / "cleaning_log.csv"))
        metrics = {"clean/items_in": len(images), "clean/items_out": len(keep), "clean/dropped": len(drops)}
        tracking.log_metrics(metrics)
        return metrics

    return stage.execute(config, "clean", ("data", "clean"), {"source": config.data.source}, body, force)
