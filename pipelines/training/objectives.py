"""The project's metric: what early stopping watches, tune ranks by and the champion rule compares
(`train.objective`), and for binary tasks the decision threshold chosen on validation (`train.threshold`,
`train.floors`).

Pure functions over labels and model outputs (class probabilities, or predictions for regression); the edge
predictor applies the chosen threshold with `deploy.edge.predict.decide`, the one definition of a decision.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk_metrics

import deploy.edge.predict as edge
from pipelines.core import config as config_module
from pipelines.core.errors import ConfigError
from pipelines.training import metrics

# name -> (task, higher is better)
OBJECTIVES = {
    "accuracy": ("classification", True), "balanced_accuracy": ("classification", True),
    "f1": ("classification", True), "recall": ("classification", True), "specificity": ("classification", True),
    "ppv": ("classification", True), "npv": ("classification", True), "roc_auc": ("classification", True),
    "pr_auc": ("classification", True), "mae": ("regression", False), "rmse": ("regression", False),
    "mape": ("regression", False),
}
THRESHOLDED = config_module.THRESHOLDED  # the metrics that need a decision
CANDIDATES = 512  # thresholds tried: the distinct validation scores, thinned to at most this many quantiles


def positive_index(class_names: list[str], positive_class: str) -> int:
    """The index of `train.positive_class` (empty: the second class).

    Raises:
        ConfigError: the class is not one of the task's.
    """
    if not positive_class:
        return 1
    if positive_class not in class_names:
        raise ConfigError(f"train.positive_class: {positive_class!r} is not a class (classes: {class_names})")
    return class_names.index(positive_class)


def score(name: str, y: np.ndarray, outputs: np.ndarray, threshold: float | None = None, positive: int = 1) -> float:
    """One objective on one split. Classification `outputs` are class probabilities: decisions by argmax, or for
    a binary task at `threshold` on the `positive` class's probability; recall, specificity, PPV, NPV and F1 are
    the positive class's for a binary task, else macro averages over classes."""
    y = np.asarray(y)
    if OBJECTIVES[name][0] == "regression":
        predicted = np.asarray(outputs, np.float64).reshape(len(y))
        if name == "mae":
            return float(np.abs(predicted - y).mean())
        if name == "rmse":
            return float(np.sqrt(((predicted - y) ** 2).mean()))
        return float(100.0 * sk_metrics.mean_absolute_percentage_error(y, predicted))
    classes = outputs.shape[1]
    if name == "roc_auc":
        try:
            if classes == 2:
                return float(sk_metrics.roc_auc_score(y == positive, outputs[:, positive]))
            return float(sk_metrics.roc_auc_score(y, outputs, multi_class="ovr", labels=list(range(classes))))
        except ValueError:  # a class absent from y
            return 0.0
    if name == "pr_auc":
        if classes == 2:
            return float(sk_metrics.average_precision_score(y == positive, outputs[:, positive]))
        return float(np.mean([sk_metrics.average_precision_score(y == c, outputs[:, c]) for c in range(classes)]))
    predicted = edge.decide(outputs, threshold, positive)
    if name == "accuracy":
        return float((predicted == y).mean())
    if name == "balanced_accuracy":
        return float(sk_metrics.balanced_accuracy_score(y, predicted))
    rates = metrics.per_class_rates(sk_metrics.confusion_matrix(y, predicted, labels=range(classes)))
    values = rates["precision" if name == "ppv" else name]
    return float(values[positive] if classes == 2 else values.mean())


def choose_threshold(y: np.ndarray, probabilities: np.ndarray, objective: str, floors: dict[str, float],
                     positive: int = 1) -> dict:
    """The decision threshold of a binary classifier, on validation: among the thresholds whose decisions meet
    every floor (`{"recall": 0.95}`), the one with the best objective (ties: the closest to 0.5). When none
    meets the floors, 0.5 with `met` false.

    Returns:
        {"threshold", "objective": its value there, "floors": each floor metric's value there, "met"}.
    """
    scores = np.unique(probabilities[:, positive])
    if len(scores) > CANDIDATES:
        scores = np.quantile(scores, np.linspace(0, 1, CANDIDATES))
    candidates = np.unique(np.concatenate([scores, [0.5]]))
    best = None
    for cut in candidates:
        reached = {name: score(name, y, probabilities, cut, positive) for name in floors}
        if any(reached[name] < floor for name, floor in floors.items()):
            continue
        value = score(objective, y, probabilities, cut, positive)
        key = (value, -abs(cut - 0.5))
        if best is None or key > best[0]:
            best = (key, float(cut), reached)
    if best is None:
        return {"threshold": 0.5, "objective": score(objective, y, probabilities, 0.5, positive),
                "floors": {name: score(name, y, probabilities, 0.5, positive) for name in floors}, "met": False}
    return {"threshold": best[1], "objective": best[0][0], "floors": best[2], "met": True}
