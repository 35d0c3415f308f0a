"""analyze: what the raw data looks like before anything touches it.

Class balance, shapes and value ranges, missing values, exact duplicates and label conflicts, and a quick
scikit-learn baseline so the user knows what a deep model has to beat. Writes report.md, report.json and
plots; logs them to MLflow.
"""

from __future__ import annotations

import collections
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipelines import config as config_module
from pipelines import sources, stage, tracking, workspace


def duplicate_groups(images: np.ndarray) -> list[list[int]]:
    """Indices of images with identical bytes, grouped; singletons left out."""
    groups = collections.defaultdict(list)
    for index, image in enumerate(images):
        groups[workspace.sha256_bytes(np.ascontiguousarray(image).tobytes())].append(index)
    return [members for members in groups.values() if len(members) > 1]


def profile(raw: sources.RawImages) -> dict:
    counts = np.bincount(raw.labels, minlength=len(raw.class_names))
    duplicates = duplicate_groups(raw.images)
    conflicts = [group for group in duplicates if len(set(raw.labels[group].tolist())) > 1]
    return {
        "source": raw.origin,
        "items": int(len(raw.labels)),
        "shape": list(raw.images.shape[1:]),
        "dtype": str(raw.images.dtype),
        "value_min": float(np.nanmin(raw.images)),
        "value_max": float(np.nanmax(raw.images)),
        "missing_values": int(np.isnan(raw.images).sum()),
        "class_counts": {name: int(count) for name, count in zip(raw.class_names, counts)},
        "imbalance_ratio": float(counts.max() / max(counts.min(), 1)),
        "exact_duplicate_groups": len(duplicates),
        "exact_duplicate_extra_items": int(sum(len(group) - 1 for group in duplicates)),
        "label_conflict_groups": len(conflicts),
    }


def baseline(raw: sources.RawImages, seed: int) -> dict:
    """Logistic regression on flattened pixels, 3-fold cross-validated accuracy."""
    features = raw.images.reshape(len(raw.images), -1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=seed))
    scores = cross_val_score(model, features, raw.labels, cv=3)
    return {"model": "logistic regression on flattened pixels", "cv_folds": 3,
            "accuracy_mean": float(scores.mean()), "accuracy_std": float(scores.std())}


def _plots(raw: sources.RawImages, report: dict, folder: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.bar(list(report["class_counts"]), list(report["class_counts"].values()), color="tab:blue")
    axis.set(title="Items per class", xlabel="class", ylabel="count")
    figure.tight_layout()
    figure.savefig(folder / "class_counts.png", dpi=100)
    plt.close(figure)
    figure, axes = plt.subplots(len(raw.class_names), 8, figsize=(8, len(raw.class_names)))
    for row, _ in enumerate(raw.class_names):
        members = np.flatnonzero(raw.labels == row)[:8]
        for column in range(8):
            axes[row, column].axis("off")
            if column < len(members):
                axes[row, column].imshow(raw.images[members[column], ..., 0], cmap="gray_r")
    figure.suptitle("Samples per class (rows)")
    figure.savefig(folder / "samples.png", dpi=80)
    plt.close(figure)


def _markdown(report: dict) -> str:
    lines = [f"# Dataset analysis: {report['source']}", "",
             f"- items: {report['items']}, item shape {report['shape']}, dtype {report['dtype']}",
             f"- value range: {report['value_min']:g} to {report['value_max']:g}; missing values: "
             f"{report['missing_values']}",
             f"- imbalance ratio (largest / smallest class): {report['imbalance_ratio']:.2f}",
             f"- exact duplicate groups: {report['exact_duplicate_groups']} "
             f"({report['exact_duplicate_extra_items']} extra copies); label conflicts: "
             f"{report['label_conflict_groups']}",
             f"- baseline ({report['baseline']['model']}, {report['baseline']['cv_folds']}-fold CV): accuracy "
             f"{report['baseline']['accuracy_mean']:.4f} +/- {report['baseline']['accuracy_std']:.4f}",
             "", "| class | count |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in report["class_counts"].items()]
    return "\n".join(lines) + "\n"


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Profiles the raw data and fits a quick baseline; writes report.{md,json} and plots."""

    def body(folder: Path) -> dict:
        raw = sources.load(config.data)
        report = profile(raw)
        report["baseline"] = baseline(raw, config.split.seed)
        workspace.write_json(folder / "report.json", report)
        workspace.write_text(folder / "report.md", _markdown(report))
        _plots(raw, report, folder)
        mlflow.log_artifacts(str(folder), "analysis")
        metrics = {"analyze/items": report["items"], "analyze/imbalance_ratio": report["imbalance_ratio"],
                   "analyze/exact_duplicates": report["exact_duplicate_extra_items"],
                   "analyze/baseline_accuracy": report["baseline"]["accuracy_mean"]}
        tracking.log_metrics(metrics)
        return metrics

    return stage.execute(config, "analyze", ("data",), {"source": config.data.source}, body, force)
