"""The evaluate stage's library: the fixed procedure, the check of the test items against the split manifest,
the scores of every model on the test split with bootstrap intervals, the kind's classical baseline and the
per-slice scores beside them, and the report (Markdown, plots, flat metrics)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn import metrics as sk_metrics

import deploy.edge.predict as edge
from pipelines.core import config as config_module
from pipelines.core import figures, workspace
from pipelines.core.errors import ConfigError, DataError
from pipelines.data import kinds, splits
from pipelines.training import anomaly, gates, metrics


def procedure(config: config_module.Config, task: str) -> dict:
    settings = config.evaluate
    default = {"classification": metrics.CLASSIFICATION, "anomaly": metrics.ANOMALY}.get(task, metrics.REGRESSION)
    chosen = settings.metrics or default
    unknown = sorted(set(chosen) - set(default))
    if unknown:
        raise ConfigError(f"evaluate.metrics: {unknown} are not {task} metrics (choose from {list(default)})")
    return {"metrics": list(chosen), "bootstrap_resamples": settings.bootstrap_resamples,
            "confidence": settings.confidence, "seed": settings.seed}


def verify_test_items(split_folder: Path, hashes: list[str], y: np.ndarray, ids: np.ndarray) -> None:
    """Every test item's hash of content and label (`splits.item_hash`, computed as the items stream) must
    match the split manifest.

    Raises:
        DataError: naming the items whose content or label changed, or that are missing or unexpected.
    """
    manifest = workspace.read_json(split_folder / splits.MANIFEST)
    expected = {item["id"]: item for item in manifest["items"] if item["split"] == "test"}
    actual = {str(item_id): (digest, label.item()) for item_id, digest, label in zip(ids, hashes, y)}
    changed = sorted(item for item in actual if item in expected and actual[item][0] != expected[item]["sha256"])
    relabelled = [f"{item} (label {expected[item]['label']!r} -> {actual[item][1]!r})" for item in changed
                  if actual[item][1] != expected[item]["label"]]
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    if changed or missing or extra:
        raise DataError(f"{split_folder}: test split does not match {splits.MANIFEST}: changed {changed[:10]} "
                        f"(labels changed: {relabelled[:10]}), missing {missing[:10]}, unexpected {extra[:10]}; "
                        "evaluation stopped")


def histograms(y: np.ndarray, window_scores: dict, results: dict, folder: Path) -> None:
    """An anomaly detector's test scores, normal and anomalous windows apart, with each model's threshold."""
    for name, values in window_scores.items():
        figure, axis = plt.subplots(figsize=(7, 3.5))
        bins = np.geomspace(max(values.min(), 1e-6), values.max() * 1.01, 60)
        for label, what in ((0, "normal"), (1, "anomalous")):
            if (y == label).any():
                axis.hist(values[y == label], bins=bins, alpha=0.6, label=f"{what} ({(y == label).sum()})")
        axis.axvline(results[name]["threshold"], color="black", linestyle="--",
                     label=f"threshold {results[name]['threshold']:.3g}")
        axis.set(xscale="log", xlabel="reconstruction error (normalized units)", ylabel="test windows",
                 title=f"Anomaly scores of the test windows: {name}")
        axis.legend()
        figures.save(figure, folder / f"test_scores_{name}.png")


def plots(y: np.ndarray, outputs: dict, results: dict, class_names: list[str], folder: Path,
          decision: tuple[float, int] | None = None) -> None:
    """Confusion matrices and a reliability diagram, or residual plots for regression."""
    for name, output in outputs.items():
        figure, axis = plt.subplots(figsize=(5.5, 5))
        if class_names:
            sk_metrics.ConfusionMatrixDisplay.from_predictions(y, edge.decide(output, *(decision or (None,))),
                                                               display_labels=class_names,
                                                               ax=axis, colorbar=False)
            axis.set_title(f"Test confusion: {name}")
            figures.save(figure, folder / f"confusion_{name}.png")
        else:
            axis.scatter(output, y - output, s=10)
            axis.axhline(0, color="grey", linestyle="--")
            axis.set(xlabel="predicted", ylabel="true - predicted", title=f"Test residuals: {name}")
            figures.save(figure, folder / f"residuals_{name}.png")
    if class_names:
        figure, axis = plt.subplots(figsize=(5, 5))
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
        for name in outputs:
            curve = results[name]["calibration"]
            used = [index for index, count in enumerate(curve["counts"]) if count]
            axis.plot([curve["confidence"][i] for i in used], [curve["accuracy"][i] for i in used], marker="o",
                      label=f"{name} (ECE {curve['ece']:.3f})")
        axis.set(xlabel="confidence of the top class", ylabel="accuracy", title="Reliability diagram (test)")
        axis.legend()
        figures.save(figure, folder / "reliability.png")


def baseline(config: config_module.Config, split_folder: Path, dataset: dict, items, y: np.ndarray,
              fixed: dict) -> dict:
    """The data kind's classical model (the export gate's), fitted on the training split and scored once on this
    test split with the same procedure: what the network's test score stands beside."""
    kind = kinds.get(dataset["kind"])
    train = splits.load_split(split_folder, ("train",))
    name, estimator = gates.fit_baseline(dataset["task"], kind.features(train.x["train"]), train.y["train"],
                                         kind.BASELINE, config.train.seed)
    features = kind.features(items)
    if dataset["task"] == "classification":
        output = np.zeros((len(y), len(dataset["class_names"])), np.float32)
        output[:, estimator.classes_] = estimator.predict_proba(features)
        results = metrics.classification(y, output, dataset["class_names"])
    else:
        output = estimator.predict(features)
        results = metrics.regression(y, output)
    intervals = metrics.bootstrap(y, output, dataset["task"], fixed["bootstrap_resamples"], fixed["confidence"],
                                  fixed["seed"]) if fixed["bootstrap_resamples"] else {}
    return {"model": f"{name} on the kind's features, fitted on the training split", "results": results,
            "intervals": intervals}


def slices(values: np.ndarray | None, dataset: dict, y: np.ndarray, outputs: dict, fixed: dict,
            decision: tuple[float, int] | None) -> dict | None:
    """Each value of the declared slice column on its own: its test items' count and every model's headline
    metric (accuracy, or MAE) with a bootstrap interval, by the fixed procedure."""
    if values is None:
        return None
    task, found = dataset["task"], {}
    metric = "accuracy" if task == "classification" else "mae"
    for value in sorted(set(values.tolist())):
        mask = values == value
        row = {"count": int(mask.sum())}
        for name, output in outputs.items():
            scores = metrics.classification(y[mask], output[mask], dataset["class_names"], decision) \
                if task == "classification" else metrics.regression(y[mask], output[mask])
            interval = metrics.bootstrap(y[mask], output[mask], task, fixed["bootstrap_resamples"],
                                         fixed["confidence"], fixed["seed"], 0.0, decision).get(metric) \
                if fixed["bootstrap_resamples"] else None
            row[name] = {metric: scores[metric], "interval": interval}
        found[value] = row
    return {"column": dataset["slice_column"], "metric": metric, "values": found}


def recording_of(ids) -> np.ndarray:
    """Each window's recording: a window's id is `<recording>@<start>`."""
    return np.array([str(item).rsplit("@", 1)[0] for item in ids], dtype=str)


def wilson(successes: int, count: int, confidence: float) -> list[float]:
    """Wilson score interval of a proportion: what an accuracy over `count` independent recordings allows."""
    from scipy.stats import norm

    if count == 0:
        return [float("nan"), float("nan")]
    z = float(norm.ppf(0.5 + confidence / 2.0))
    share = successes / count
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half = z * np.sqrt(share * (1 - share) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def per_recording(y: np.ndarray, outputs: dict, ids, rule: str, decision: tuple[float, int] | None,
                  fixed: dict) -> dict:
    """Sensor classifiers, per window and per recording: each recording's class is the vote of its windows
    (`edge.vote`, the edge predictor's own function, by `data.recording_vote`), scored with a Wilson interval
    over recordings; the window accuracy gets a percentile bootstrap over recordings (a recording's windows
    resampled together, since they are not independent)."""
    owner = recording_of(ids)
    names, first, index = np.unique(owner, return_index=True, return_inverse=True)
    truth = np.asarray(y)[first]
    rng = np.random.default_rng(fixed["seed"])
    draws = [rng.integers(0, len(names), len(names)) for _ in range(fixed["bootstrap_resamples"])]
    tail = 100.0 * (1.0 - fixed["confidence"]) / 2.0
    found = {"vote": rule, "recordings": int(len(names)), "windows": int(len(owner)),
             "interval": f"Wilson over recordings ({fixed['confidence']:.0%}); windows: percentile bootstrap over "
                         "recordings", "models": {}, "predicted": {}}
    for name, output in outputs.items():
        votes = np.array([edge.vote(output[index == number], *(decision or (None,)), rule=rule)[0]
                          for number in range(len(names))], dtype=np.int64)
        correct = votes == truth
        window_right = np.bincount(index, weights=edge.decide(output, *(decision or (None,))) == y,
                                   minlength=len(names))
        window_count = np.bincount(index, minlength=len(names))
        shares = [window_right[draw].sum() / window_count[draw].sum() for draw in draws]
        found["models"][name] = {
            "recording_accuracy": float(correct.mean()),
            "recording_interval": wilson(int(correct.sum()), len(names), fixed["confidence"]),
            "window_accuracy": float(window_right.sum() / window_count.sum()),
            "window_interval": [float(np.percentile(shares, tail)), float(np.percentile(shares, 100 - tail))]
            if shares else None}
        found["predicted"][name] = votes.tolist()
    found["ids"], found["labels"] = names.tolist(), truth.tolist()
    return found


def recording_text(found: dict | None) -> str:
    if not found:
        return ""
    lines = ["", f"Per recording ({found['recordings']} recordings, {found['windows']} windows; a recording's class "
             f"is the {found['vote']} vote of its windows; intervals: {found['interval']}):", "",
             "| model | recording accuracy | window accuracy |", "|---|---|---|"]
    for name, row in found["models"].items():
        spread = row["window_interval"]
        window = f"{row['window_accuracy']:.4f}" + (f" [{spread[0]:.4f}, {spread[1]:.4f}]" if spread else "")
        lines.append(f"| {name} | {row['recording_accuracy']:.4f} [{row['recording_interval'][0]:.4f}, "
                     f"{row['recording_interval'][1]:.4f}] | {window} |")
    return "\n".join(lines) + "\n"


def recording_csv(found: dict, class_names: list[str]) -> str:
    """recordings.csv: each test recording, its class and every model's vote."""
    models = list(found["predicted"])
    rows = [(recording, class_names[label], *(class_names[found["predicted"][name][number]] for name in models))
            for number, (recording, label) in enumerate(zip(found["ids"], found["labels"]))]
    return workspace.csv_text(("recording", "label", *models), rows)


def slice_text(sliced: dict | None) -> str:
    if not sliced:
        return ""
    models = [name for name in next(iter(sliced["values"].values())) if name != "count"]
    lines = ["", f"Per slice of `{sliced['column']}` ({sliced['metric']}, with the same intervals):", "",
             "| slice | test items | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for value, row in sliced["values"].items():
        cells = [f"{row[name][sliced['metric']]:.4f}" + (f" [{row[name]['interval'][0]:.4f}, "
                 f"{row[name]['interval'][1]:.4f}]" if row[name]["interval"] else "") for name in models]
        lines.append(f"| {value} | {row['count']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(results: dict, intervals: dict, fixed: dict, uses: list[dict], task: str,
            reference: dict | None = None) -> str:
    names = [name if task != "classification" or name in ("accuracy", "roc_auc") else f"macro_{name}"
             for name in fixed["metrics"]]
    confidence = int(round(100 * fixed["confidence"]))
    lines = ["# Test evaluation", "", f"Uses of these test items, this one included: {len(uses) + 1}"
             + (" (REUSED: this score is no longer an unbiased estimate)" if uses else ""), ""]
    lines += [f"- earlier use: {use['time']}, MLflow run {use['evaluate_run_id']} (experiment "
              f"'{use['experiment']}'), {use['shared']} of these items" for use in uses]
    lines += ["",
             f"Intervals: {confidence}% percentile bootstrap over test items ({fixed['bootstrap_resamples']} "
             "resamples).", "", "| model | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    rows = {**results, **({"baseline": reference["results"]} if reference else {})}
    intervals = {**intervals, **({"baseline": reference["intervals"]} if reference else {})}
    for model, row in rows.items():
        cells = []
        for name in names:
            value, interval = row.get(name), intervals[model].get(name)
            text = "n/a" if value is None else f"{value:.4f}"
            cells.append(text + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if reference:
        lines += ["", f"baseline: {reference['model']}, scored once on this test split beside the network."]
    per_class = results["keras"].get("per_class")
    if per_class:
        lines += ["", "Per class (Keras model):", "", "| class | PPV | TPR | TNR | NPV | F1 | support |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['specificity']:.4f} | "
                  f"{row['npv']:.4f} | {row['f1']:.4f} | {row['support']} |" for label, row in per_class.items()]
    return "\n".join(lines) + "\n"


def flat_metrics(results: dict, intervals: dict) -> dict:
    flat = {}
    for model, row in results.items():
        prefix = "test" if model == "keras" else f"test/{model}"
        flat.update({f"{prefix}/{key}": value for key, value in row.items() if isinstance(value, float)})
        if "calibration" in row:
            flat[f"{prefix}/ece"] = row["calibration"]["ece"]
        for key, (low, high) in intervals[model].items():
            flat.update({f"{prefix}/{key}_ci_low": low, f"{prefix}/{key}_ci_high": high})
    return flat


def scored(task: str, y: np.ndarray, outputs: dict, items, dataset: dict, normalizer: dict | None,
           thresholds: dict, decision: tuple[float, int] | None, fixed: dict) -> tuple[dict, dict, dict]:
    """(outputs as scored, results, bootstrap intervals) of every model: a detector's windows by their
    reconstruction error at its threshold, a classifier at its decision rule, a regressor's single output."""
    if task == "anomaly":  # reconstructions -> each window's score
        windows = items.array()  # sensor windows: a small split
        outputs = {name: anomaly.scores(output, windows, normalizer) for name, output in outputs.items()}
        results = {name: {**anomaly.report(y, output, thresholds[name]), "threshold": thresholds[name]}
                   for name, output in outputs.items()}
    elif task == "classification":
        results = {name: metrics.classification(y, output, dataset["class_names"], decision)
                   for name, output in outputs.items()}
    else:
        outputs = {name: output[:, 0] for name, output in outputs.items()}
        results = {name: metrics.regression(y, output) for name, output in outputs.items()}
    intervals = {name: metrics.bootstrap(y, output, task, fixed["bootstrap_resamples"], fixed["confidence"],
                                         fixed["seed"], thresholds[name] or 0.0, decision)
                 if fixed["bootstrap_resamples"] else {} for name, output in outputs.items()}
    return outputs, results, intervals
