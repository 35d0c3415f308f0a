"""The metrics people report, as pure functions: classification (per class and macro PPV, TPR, TNR, NPV, F1,
accuracy, ROC-AUC, calibration), regression (MAE, MSE, RMSE, MAPE, R^2), anomaly detection (precision, recall,
F1, ROC-AUC, PR-AUC) with bootstrap intervals, a model's validation columns for export, and image
reconstruction (PSNR)."""

from __future__ import annotations

import numpy as np
from skimage import metrics as image_metrics
from sklearn import metrics as sk_metrics

import deploy.edge.predict as edge
from pipelines.data import readers
from pipelines.training import anomaly as detection

CLASSIFICATION = ("accuracy", "precision", "recall", "specificity", "npv", "f1", "roc_auc")
REGRESSION = ("mae", "mse", "rmse", "mape", "r2")
_PER_CLASS = ("precision", "recall", "specificity", "npv", "f1")


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


def per_class_rates(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest rates per class from a (true, predicted) confusion matrix (0 where undefined).

    precision = PPV = TP/(TP+FP); recall = sensitivity = TPR = TP/(TP+FN); specificity = TNR = TN/(TN+FP);
    NPV = TN/(TN+FN); F1 = harmonic mean of precision and recall.
    """
    confusion = confusion.astype(float)
    true_positive = np.diag(confusion)
    false_positive = confusion.sum(axis=0) - true_positive
    false_negative = confusion.sum(axis=1) - true_positive
    true_negative = confusion.sum() - true_positive - false_positive - false_negative
    precision = _safe_divide(true_positive, true_positive + false_positive)
    recall = _safe_divide(true_positive, true_positive + false_negative)
    return {"precision": precision, "recall": recall,
            "specificity": _safe_divide(true_negative, true_negative + false_positive),
            "npv": _safe_divide(true_negative, true_negative + false_negative),
            "f1": _safe_divide(2 * precision * recall, precision + recall)}


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Binary ROC-AUC, or macro one-vs-rest for several classes; None when a class is absent from y_true."""
    # Dequantized int8 scores do not sum exactly to 1, which multi-class ROC-AUC requires.
    sums = probabilities.sum(axis=1, keepdims=True)
    if not np.allclose(sums, 1.0):  # renormalize only then: dividing exact rows would perturb their ties
        probabilities = np.clip(probabilities, 0.0, None) / np.maximum(sums, 1e-12)
    try:
        if probabilities.shape[1] == 2:
            return float(sk_metrics.roc_auc_score(y_true, probabilities[:, 1]))
        return float(sk_metrics.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro",
                                              labels=list(range(probabilities.shape[1]))))
    except ValueError:
        return None


def calibration(y_true: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict:
    """Reliability of the top-class confidence: per-bin confidence and accuracy, and the expected calibration
    error (ECE, the count-weighted mean gap)."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    mean_confidence = _safe_divide(np.bincount(index, confidence, bins), counts)
    accuracy = _safe_divide(np.bincount(index, correct, bins), counts)
    return {"bin_edges": edges.tolist(), "counts": counts.tolist(), "confidence": mean_confidence.tolist(),
            "accuracy": accuracy.tolist(),
            "ece": float(np.sum(counts * np.abs(accuracy - mean_confidence)) / max(len(y_true), 1))}


def classification(y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str],
                   decision: tuple[float, int] | None = None) -> dict:
    """Accuracy, macro and per-class rates, ROC-AUC and calibration from predicted class probabilities; class
    decisions by argmax, or by a binary model's (threshold, positive class index) `decision`."""
    predicted = edge.decide(probabilities, *(decision or (None,)))
    confusion = sk_metrics.confusion_matrix(y_true, predicted, labels=range(len(class_names)))
    rates = per_class_rates(confusion)
    result = {"accuracy": float(np.trace(confusion) / confusion.sum()), "roc_auc": roc_auc(y_true, probabilities)}
    result.update({f"macro_{name}": float(values.mean()) for name, values in rates.items()})
    result["per_class"] = {label: {name: float(rates[name][index]) for name in _PER_CLASS} |
                           {"support": int(confusion[index].sum())} for index, label in enumerate(class_names)}
    result["calibration"] = calibration(y_true, probabilities)
    result["confusion_matrix"] = confusion.tolist()
    return result


def regression(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MAE, MSE, RMSE, MAPE (in percent) and R^2."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    mse = float(sk_metrics.mean_squared_error(y_true, y_pred))
    return {"mae": float(sk_metrics.mean_absolute_error(y_true, y_pred)), "mse": mse, "rmse": float(np.sqrt(mse)),
            "mape": float(100.0 * sk_metrics.mean_absolute_percentage_error(y_true, y_pred)),
            "r2": float(sk_metrics.r2_score(y_true, y_pred))}


def _classification_sample(y_true, predicted, classes: int) -> dict:
    confusion = np.bincount(y_true * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    rates = per_class_rates(confusion)
    return {"accuracy": np.trace(confusion) / confusion.sum()} | {f"macro_{k}": v.mean() for k, v in rates.items()}


def bootstrap(y_true: np.ndarray, outputs: np.ndarray, task: str, resamples: int, confidence: float,
              seed: int, threshold: float = 0.0, decision: tuple[float, int] | None = None) -> dict[str, list[float]]:
    """Percentile bootstrap intervals over test items: name -> [low, high] (anomaly detection: `outputs` are
    window scores, flagged at `threshold`; classification: decided as `classification` does)."""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    predicted = edge.decide(outputs, *(decision or (None,))) if task == "classification" else outputs
    for _ in range(resamples):
        index = rng.integers(0, len(y_true), len(y_true))
        if task == "classification":
            values = _classification_sample(y_true[index], predicted[index], outputs.shape[1])
        elif task == "anomaly":  # `outputs`: window scores
            found = detection.report(y_true[index], predicted[index], threshold)
            values = {name: found[name] for name in ANOMALY if np.isfinite(found[name])}
        else:
            values = regression(y_true[index], predicted[index])
        for name, value in values.items():
            samples.setdefault(name, []).append(float(value))
    tail = 100.0 * (1.0 - confidence) / 2.0
    return {name: [float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))]
            for name, values in samples.items()}


def psnr(reference: np.ndarray, candidate: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of `candidate` against `reference` (one MSE over all their pixels);
    inf when they are equal."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if np.array_equal(reference, candidate):
        return float("inf")
    return float(image_metrics.peak_signal_noise_ratio(reference, candidate, data_range=data_range))


ANOMALY = ("precision", "recall", "f1", "roc_auc", "pr_auc")
HIGHER_IS_BETTER = {"val_accuracy": True, "val_f1": True, "val_mae": False}


def selection_column(task: str, y_val: np.ndarray) -> str:
    """The validation column that decides between a model's TF-Lite variants: accuracy, MAE, or for anomaly
    detection the F1 at each variant's own threshold where validation holds both kinds of windows, else the
    reconstruction error of the normal windows (`val_mae`)."""
    if task == "classification":
        return "val_accuracy"
    if task == "anomaly" and 0 < int(np.sum(y_val)) < len(y_val):
        return "val_f1"
    return "val_mae"


def validation(task: str, y: np.ndarray, outputs: np.ndarray, reference: np.ndarray | None = None,
               x: np.ndarray | None = None, normalizer: dict | None = None, percentile: float = 99.0,
               decision: tuple[float, int] | None = None) -> dict:
    """A model's validation scores from its outputs (the export table's columns): accuracy and top-1 agreement
    with `reference` (the Keras model's outputs), or MAE; for anomaly detection (`x` the windows) the threshold
    chosen on these windows, how, the F1 and PR-AUC there, and the reconstruction error of the normal windows."""
    if task == "classification":
        predicted = edge.decide(outputs, *(decision or (None,)))
        row = {"val_accuracy": float((predicted == y).mean())}
        if reference is not None:
            row["agreement"] = float((predicted == edge.decide(reference, *(decision or (None,)))).mean())
        return row
    if task != "anomaly":
        return {"val_mae": float(np.abs(outputs[:, 0] - y).mean())}
    x = readers.reader(x).array()  # windows: a small split
    window_scores = detection.scores(outputs, x, normalizer)
    cut, method = detection.threshold(window_scores, y, percentile)
    found = detection.report(y, window_scores, cut)
    normal = y == 0
    row = {"threshold": cut, "threshold_method": method, "val_f1": found["f1"],
           "val_mae": float(np.abs(outputs[normal] - detection.normalized(x[normal], normalizer)).mean())}
    if np.isfinite(found["pr_auc"]):
        row["val_pr_auc"] = found["pr_auc"]
    return row


def segmentation(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict:
    """Pixel accuracy, IoU per class (NaN for a class in neither truth nor prediction) and their mean."""
    matrix = sk_metrics.confusion_matrix(truth.ravel(), predicted.ravel(), labels=np.arange(num_classes))
    hits = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, hits / union, np.nan)
    return {"pixel_accuracy": float(hits.sum() / matrix.sum()), "miou": float(np.nanmean(iou)), "iou": iou}
