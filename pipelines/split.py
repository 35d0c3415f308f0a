"""split: stratified, seeded train/val/test, a manifest with content hashes, and the train-only normalizer.

The same config gives a byte-identical `split_manifest.json`. Exact duplicates were removed by clean, so no
image can sit on both sides of a split. The normalizer (pixel mean and variance) is fitted on the training
split only and saved for every later stage.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from sklearn.model_selection import train_test_split

from pipelines import config as config_module
from pipelines import stage, tracking, workspace

SPLITS = ("train", "val", "test")
MANIFEST = "split_manifest.json"


def item_hash(image: np.ndarray) -> str:
    """Content hash of one canonical image (its uint8 bytes)."""
    return workspace.sha256_bytes(np.ascontiguousarray(image, dtype=np.uint8).tobytes())


def assign(labels: np.ndarray, rules: config_module.SplitConfig) -> dict[str, np.ndarray]:
    """Stratified, seeded indices per split."""
    indices = np.arange(len(labels))
    rest, test = train_test_split(indices, test_size=rules.test_fraction, stratify=labels,
                                  random_state=rules.seed)
    val_share = rules.val_fraction / (1.0 - rules.test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=rules.seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def build_manifest(images: np.ndarray, labels: np.ndarray, ids: np.ndarray, parts: dict) -> dict:
    items = [
        {"id": str(ids[index]), "label": int(labels[index]), "sha256": item_hash(images[index]), "split": name}
        for name in SPLITS for index in parts[name]
    ]
    items.sort(key=lambda item: item["id"])
    return {"counts": {name: int(len(parts[name])) for name in SPLITS}, "items": items}


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Splits the cleaned images and fits the normalizer on the training split."""
    clean_folder, _ = stage.upstream(config, "clean", "split")

    def body(folder: Path) -> dict:
        images, labels, ids = workspace.load_arrays(clean_folder, "clean", "x", "y", "ids")
        parts = assign(labels, config.split)
        for name in SPLITS:
            index = parts[name]
            workspace.save_arrays(folder, name, x=images[index], y=labels[index], ids=ids[index])
        workspace.write_json(folder / MANIFEST, build_manifest(images, labels, ids, parts))
        train_pixels = images[parts["train"]].astype(np.float64)
        workspace.write_json(folder / "normalizer.json", {
            "fitted_on": "train", "mean": float(train_pixels.mean()), "variance": float(train_pixels.var())})
        workspace.write_bytes(folder / "classes.json", (clean_folder / "classes.json").read_bytes())
        mlflow.log_artifact(str(folder / MANIFEST))
        mlflow.log_artifact(str(folder / "normalizer.json"))
        metrics = {f"split/{name}_items": len(parts[name]) for name in SPLITS}
        tracking.log_metrics(metrics)
        return metrics

    inputs = {"clean": stage.manifest_digest(clean_folder)}
    return stage.execute(config, "split", ("split",), inputs, body, force)
