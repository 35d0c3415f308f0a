"""Quality gates on validation data: what a model must show before anything is bundled.

A model is *blessed* when, on the validation split, it beats (a) always answering the training split's majority
class (its mean, for regression) by more than `export.gate_majority_margin`, (b) a classical model trained on
the same training split, on the data kind's cheap features (`kinds.<kind>.features`: grey thumbnails, encoded
rows, window statistics), by at least `export.gate_baseline_margin` (negative: it may trail by that much; for
regression the margins are fractions of the reference's MAE), and
(c) every floor in `export.gate_min` (a metric of the validation report, e.g. `accuracy` or `macro_recall`, or
a class's own, `recall@malignant`, or a slice's, `accuracy@city=east`), and (d) with `export.gate_max_drop`, not
fall below the version bundled before it, scored on the same validation split, by more than that (TFX's change
threshold). A binary model with a tuned threshold is judged by its decisions there.
The champion rule (pipelines/training/champion.py) already keeps a model from replacing a better champion.
Anomaly detection has no majority class or classical baseline here; only its floors apply.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import deploy.edge.predict as edge
from pipelines.core import config as config_module
from pipelines.data.splits import SplitData
from pipelines.training import metrics


def _score(task: str, y: np.ndarray, predicted: np.ndarray) -> float:
    """Accuracy of predicted classes, or MAE of predicted values."""
    return float((predicted == y).mean()) if task == "classification" else float(np.abs(predicted - y).mean())


def majority(data: SplitData) -> tuple[str, float]:
    """(what it is, its validation score): the training split's majority class, or its mean."""
    train, val = data.y["train"], data.y["val"]
    if data.task == "classification":
        label = int(np.bincount(train.astype(np.int64)).argmax())
        return f"always '{data.class_names[label]}'", _score(data.task, val, np.full(len(val), label))
    return f"always the training mean {float(train.mean()):.4g}", _score(data.task, val, np.full(len(val),
                                                                                            train.mean()))


def fit_baseline(task: str, features: np.ndarray, y: np.ndarray, model: str, seed: int) -> tuple[str, object]:
    """(what it is, the fitted estimator): the classical model of a kind (`model`: "forest" or "logistic";
    ridge regression for a regression task) fitted on the training split's features."""
    classification = task == "classification"
    if model == "forest":
        estimator = (RandomForestClassifier if classification else RandomForestRegressor)(n_estimators=100,
                                                                                        random_state=seed)
        name = "random forest (100 trees)"
    else:
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)
                                  if classification else Ridge())
        name = "logistic regression" if classification else "ridge regression"
    return name, estimator.fit(features, y)


def baseline(data: SplitData, features: dict[str, np.ndarray], model: str, seed: int) -> tuple[str, float]:
    """(what it is, its validation score): a classical model fitted on the training split's features."""
    name, estimator = fit_baseline(data.task, features["train"], data.y["train"], model, seed)
    return name, _score(data.task, data.y["val"], estimator.predict(features["val"]))


def floor_value(report: dict, name: str, sliced=None) -> float | None:
    """A metric of the validation report by its `export.gate_min` name: `accuracy`, `macro_recall`, ..., a
    class's own as `<metric>@<class>` (`recall@malignant`; precision, recall, specificity, npv, f1), or a
    slice's as `<metric>@<column>=<value>` (`sliced(column, value)` gives that slice's report). None when there
    is no such metric, class or slice."""
    if "@" not in name:
        return report.get(name)
    metric, where = name.split("@", 1)
    if "=" in where:
        found = sliced(*where.split("=", 1)) if sliced is not None else None
        return None if found is None else found.get(metric)
    return report.get("per_class", {}).get(where, {}).get(metric)


def verdict(config: config_module.Config, data: SplitData, outputs: np.ndarray, features: dict | None,
            baseline_model: str, decision: tuple[float, int] | None = None,
            slices: tuple[str, np.ndarray] | None = None,
            incumbent: tuple[str, np.ndarray] | None = None) -> dict:
    """Every check with its numbers, and whether the model is blessed. `outputs` are the model's validation
    outputs, decided by argmax or a binary model's (threshold, positive index) `decision`; `features` the kind's
    features of train and val (None: no baseline for this task); `slices` the declared slice column and each
    validation item's value of it; `incumbent` the model bundled before and its validation outputs."""
    settings, task, checks = config.export, data.task, []
    if task in ("classification", "regression"):
        higher = task == "classification"
        score = _score(task, data.y["val"], edge.decide(outputs, *(decision or (None,))) if higher
                       else outputs[:, 0])
        metric = "accuracy" if higher else "mae"
        # accuracy: the difference in points; MAE: the reduction as a fraction of the reference's MAE
        gain = (lambda other: score - other) if higher else \
            (lambda other: (other - score) / max(other, 1e-12))  # noqa: E731
        name, value = majority(data)
        checks.append({"check": "beats the majority predictor", "against": name, "metric": f"val {metric}",
                       "model": score, "reference": value, "margin": settings.gate_majority_margin,
                       "passed": gain(value) > settings.gate_majority_margin})
        if features is not None:
            name, value = baseline(data, features, baseline_model, config.train.seed)
            checks.append({"check": "beats a classical baseline", "against": f"{name} on the same training split",
                           "metric": f"val {metric}", "model": score, "reference": value,
                           "margin": settings.gate_baseline_margin,
                           "passed": gain(value) >= settings.gate_baseline_margin})
        if incumbent is not None and settings.gate_max_drop is not None:
            name, previous = incumbent
            value = _score(task, data.y["val"], edge.decide(previous, *(decision or (None,))) if higher
                           else previous[:, 0])
            checks.append({"check": "does not fall below the bundled model", "against": name,
                           "metric": f"val {metric}", "model": score, "reference": value,
                           "margin": -settings.gate_max_drop, "passed": gain(value) >= -settings.gate_max_drop})
    if settings.gate_min:
        def scored(mask):
            if task == "classification":
                return metrics.classification(data.y["val"][mask], outputs[mask], data.class_names, decision)
            return metrics.regression(data.y["val"][mask], outputs[mask][:, 0]) if task == "regression" else {}

        def sliced(column, value):
            if slices is None or slices[0] != column or not (slices[1] == value).any():
                return None
            return scored(slices[1] == value)

        report = scored(np.ones(len(data.y["val"]), dtype=bool))
        for metric, floor in settings.gate_min.items():
            value = floor_value(report, metric, sliced)
            checks.append({"check": f"{metric} >= {floor:g}", "against": "export.gate_min", "metric": f"val {metric}",
                           "model": value, "reference": floor, "margin": 0.0,
                           "passed": value is not None and value >= floor})
    failed = [check for check in checks if not check["passed"]]
    return {"blessed": not failed, "checks": checks, "failed": [describe(check) for check in failed]}


def describe(check: dict) -> str:
    model = "n/a" if check["model"] is None else f"{check['model']:.4f}"
    return (f"{check['check']}: {check['metric']} {model} against {check['reference']:.4f} "
            f"({check['against']}, margin {check['margin']:g})")


def text(result: dict) -> str:
    """The verdict as a Markdown table (export_table.md, the terminal)."""
    lines = [f"Gates on validation data: {'blessed' if result['blessed'] else 'NOT blessed'}", "",
             "| check | against | metric | model | reference | margin | passed |", "|---|---|---|---|---|---|---|"]
    for check in result["checks"]:
        model = "n/a" if check["model"] is None else f"{check['model']:.4f}"
        lines.append(f"| {check['check']} | {check['against']} | {check['metric']} | {model} | "
                     f"{check['reference']:.4f} | {check['margin']:g} | {'yes' if check['passed'] else 'NO'} |")
    if not result["checks"]:
        lines.append("| (none: anomaly detection has no majority class or classical baseline; set export.gate_min) "
                     "| | | | | | |")
    return "\n".join(lines)
