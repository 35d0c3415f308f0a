"""Reconstruction-error anomaly detection, a task on the same stages as classification and regression: the
autoencoder (`model.architecture: autoencoder1d`) is fitted on normal windows only (`training_view`), a window's
score is its mean squared reconstruction error in the normalized space, and each model's threshold is chosen on
validation data by export (the best F1 where validation anomalies are labelled, else a percentile of the normal
windows' scores)."""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn import metrics as sk_metrics

import deploy.edge.predict as edge
from pipelines.data.splits import SplitData


def training_view(data: SplitData) -> SplitData:
    """What the autoencoder trains and early-stops on: the normal windows of train and val, each its own target
    in the normalized space."""
    x = {name: data.x[name].subset(data.y[name] == 0) for name in data.x}
    y = {name: normalized(windows.array(), data.normalizer) for name, windows in x.items()}
    return dataclasses.replace(data, x=x, y=y)


# One definition of the normalization and the score, shared with the edge predictor that runs on the device.
normalized = edge.normalized
scores = edge.anomaly_scores


def threshold(val_scores: np.ndarray, val_labels: np.ndarray, percentile: float) -> tuple[float, str]:
    """(threshold, how it was chosen): the best F1 on validation when it holds both kinds of windows, else the
    `percentile` of the normal validation windows' scores."""
    if 0 < val_labels.sum() < len(val_labels):
        precision, recall, cuts = sk_metrics.precision_recall_curve(val_labels, val_scores)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        return float(cuts[int(np.argmax(f1))]), "best F1 on validation"
    normal = val_scores[val_labels == 0]
    return float(np.percentile(normal, percentile)), f"{percentile:g}th percentile of normal validation scores"


def report(labels: np.ndarray, window_scores: np.ndarray, cut: float) -> dict:
    """Precision, recall, F1 at the threshold, ROC-AUC and PR-AUC (average precision), with the counts."""
    predicted = window_scores >= cut
    both = 0 < labels.sum() < len(labels)
    return {"precision": float(sk_metrics.precision_score(labels, predicted, zero_division=0)),
            "recall": float(sk_metrics.recall_score(labels, predicted, zero_division=0)),
            "f1": float(sk_metrics.f1_score(labels, predicted, zero_division=0)),
            "roc_auc": float(sk_metrics.roc_auc_score(labels, window_scores)) if both else float("nan"),
            "pr_auc": float(sk_metrics.average_precision_score(labels, window_scores)) if both else float("nan"),
            "windows": int(len(labels)), "anomalous_windows": int(labels.sum()), "flagged": int(predicted.sum())}
