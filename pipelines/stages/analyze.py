"""analyze: what the raw data looks like before anything touches it.

Images: class balance (empty classes named), sizes, modes and channels with the files of every odd size and
mode, unreadable files, exact duplicates (content hash) and label conflicts; near-duplicates are clean's job
(it verifies and clusters them, once). Tables: dtypes, missing values (and the tokens read as missing),
ranges, outliers, constant and duplicate columns, high-cardinality categoricals, correlations, declared-range
violations and inconsistencies between columns. Both: a quick scikit-learn baseline, so the
user knows what a deep model has to beat. Writes report.md, report.json and plots; logs them to MLflow.
"""

from __future__ import annotations

import collections
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipelines.core import config as config_module
from pipelines.core import figures, stage, tracking, workspace
from pipelines.data import duplicates, signals, sources, tables


def _odd(values: dict[str, str]) -> dict[str, list[str]]:
    """For every value but the most common: the ids that have it (at most 20 each)."""
    counts = collections.Counter(values.values())
    common = counts.most_common(1)[0][0] if counts else None
    odd = collections.defaultdict(list)
    for item, value in values.items():
        if value != common and len(odd[value]) < 20:
            odd[value].append(item)
    return dict(odd)


def image_profile(raw: sources.RawImages, seed: int) -> dict:
    """Balance, sizes and modes (naming the files of every odd one), unreadable files, exact duplicates, label
    conflicts and the baseline, from one pass over the files that keeps a small record per image (its size,
    mode, bands, content hash and a 16x16 grey thumbnail for the baseline). Near-duplicates are verified and
    clustered once, by clean (near_duplicates.json)."""
    sizes, modes, bands, hashes, thumbs = {}, {}, collections.Counter(), [None] * len(raw.images), {}
    for index, image in sources.scan(raw, "analyze"):
        item = raw.ids[index]
        sizes[item], modes[item] = f"{image.size[0]}x{image.size[1]}", image.mode
        bands[str(len(image.getbands()))] += 1
        hashes[index] = sources.pixel_hash(image)
        thumbs[index] = np.asarray(image.convert("L").resize((16, 16)), dtype=np.uint8).ravel()
    sources.check_present(raw)
    exact = duplicates.exact_groups(hashes)
    names, labels = raw.class_names, raw.labels
    conflicts = [group for group in exact if len(set(labels[group].tolist())) > 1]
    counts = np.bincount(labels, minlength=len(names))
    return {
        "source": raw.origin, "kind": "images", "task": raw.task, "items": len(raw.images),
        "class_counts": {name: int(count) for name, count in zip(names, counts)},
        "empty_classes": sources.empty_classes(raw),
        "imbalance_ratio": float(counts.max() / max(counts.min(), 1)),
        "sizes": dict(collections.Counter(sizes.values()).most_common(20)),
        "odd_sizes": _odd(sizes),
        "modes": dict(collections.Counter(modes.values())),
        "odd_modes": _odd(modes),
        "channels": dict(bands),
        "unreadable": {raw.ids[index]: problem for index, problem in sorted(raw.problems.items())},
        "exact_duplicate_groups": [[raw.ids[index] for index in group] for group in exact],
        "exact_duplicate_extra_items": int(sum(len(group) - 1 for group in exact)),
        "label_conflicts": [[f"{raw.ids[index]} ({names[labels[index]]})" for index in group]
                            for group in conflicts],
        "baseline": image_baseline(thumbs, labels, seed),
    }


def image_baseline(thumbs: dict[int, np.ndarray], labels: np.ndarray, seed: int) -> dict:
    """Logistic regression on small flattened greyscale images (16x16), 3-fold cross-validated accuracy."""
    keep = sorted(thumbs)
    features = np.stack([thumbs[index] for index in keep]).astype(np.float32)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=seed))
    scores = cross_val_score(model, features, labels[keep], cv=3)
    return {"model": "logistic regression on 16x16 grey pixels", "metric": "accuracy", "cv_folds": 3,
            "score_mean": float(scores.mean()), "score_std": float(scores.std())}


def table_baseline(raw: sources.RawTable, data: config_module.DataConfig, seed: int) -> dict:
    """Random forest with feature importances, 3-fold cross-validated (accuracy, or MAE for regression)."""
    classification = raw.task == "classification"
    forest = (RandomForestClassifier if classification else RandomForestRegressor)(n_estimators=100,
                                                                                  random_state=seed)
    model = make_pipeline(tables.preprocessor(raw.features, data.columns), forest)
    scoring = "accuracy" if classification else "neg_mean_absolute_error"
    scores = cross_val_score(model, raw.features, raw.target, cv=3, scoring=scoring)
    model.fit(raw.features, raw.target)
    names = model[0].get_feature_names_out()
    ranked = sorted(zip(model[-1].feature_importances_, names), reverse=True)[:10]
    sign = 1.0 if classification else -1.0
    return {"model": "random forest (100 trees)", "metric": "accuracy" if classification else "mae",
            "cv_folds": 3, "score_mean": float(sign * scores.mean()), "score_std": float(scores.std()),
            "feature_importances": [[name, float(value)] for value, name in ranked]}


def _bar(values: dict, title: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(max(6, len(values) * 0.4), 3))
    axis.bar([str(key) for key in values], list(values.values()), color="tab:blue")
    axis.set(title=title)
    axis.tick_params(axis="x", rotation=45 if len(values) > 10 else 0)
    figures.save(figure, path)


def _sample_grid(raw: sources.RawImages, path: Path) -> None:
    rows = min(len(raw.class_names), 10)
    figure, axes = plt.subplots(rows, 8, figsize=(8, rows), squeeze=False)
    for row in range(rows):
        members = [index for index in np.flatnonzero(raw.labels == row) if index not in raw.problems][:8]
        for column in range(8):
            axes[row, column].axis("off")
            if column < len(members):
                axes[row, column].imshow(raw.images[members[column]].convert("RGB"))
    figure.suptitle("Samples per class (rows)")
    figures.save(figure, path, dpi=80, tight=False)


def signal_profile(raw: signals.Recordings, data: config_module.DataConfig, seed: int) -> dict:
    """Per-channel ranges, missing samples, flat-lined and clipped stretches, sampling-rate jitter, and a
    random forest on per-channel window statistics, cross-validated by recording (3 folds, no recording in
    two folds)."""
    from sklearn.model_selection import GroupKFold

    windows = signals.windows(raw, data.window, data.stride)
    report = {"source": raw.origin, "kind": "signals", "task": raw.task, "items": len(raw.ids),
              "windows": int(len(windows.x)), "window": data.window, "stride": data.stride,
              **signals.profile(raw)}
    if raw.task == "classification":
        counts = np.bincount(raw.labels, minlength=len(raw.class_names))
        report["class_counts"] = {name: int(count) for name, count in zip(raw.class_names, counts)}
        forest = RandomForestClassifier(n_estimators=100, random_state=seed)
        scores = cross_val_score(forest, signals.summary_features(windows.x), windows.label,
                                 groups=windows.recording, cv=GroupKFold(3))
        report["baseline"] = {"model": "random forest on per-channel window statistics", "metric": "accuracy",
                              "cv_folds": 3, "score_mean": float(scores.mean()), "score_std": float(scores.std())}
    else:
        report["baseline"] = {"model": "none (anomaly detection)", "metric": "-", "cv_folds": 0,
                              "score_mean": float("nan"), "score_std": float("nan")}
    return report


def _signal_grid(raw: signals.Recordings, data: config_module.DataConfig, path: Path) -> None:
    """One row per class, three example windows each, every channel a line."""
    windows = signals.windows(raw, data.window, data.stride)
    names = raw.class_names or ("windows",)
    figure, axes = plt.subplots(len(names), 3, figsize=(10, 1.8 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        members = np.flatnonzero(windows.label == row)[:: max(1, int(np.sum(windows.label == row)) // 3)][:3]
        for column in range(3):
            axis = axes[row, column]
            if column < len(members):
                axis.plot(windows.x[members[column]], linewidth=0.8)
            axis.set_title(f"{name}: {raw.ids[windows.recording[members[column]]]}" if column < len(members)
                           else name, fontsize=7)
            axis.tick_params(labelsize=6)
    axes[0, -1].legend(raw.channels, fontsize=5, loc="upper right")
    figure.suptitle(f"Example windows per class ({data.window} samples at {raw.sampling_rate_hz:g} Hz)")
    figures.save(figure, path)


def _correlation_plot(raw: sources.RawTable, path: Path) -> None:
    numeric = raw.features.select_dtypes("number")
    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(numeric.corr().to_numpy(), cmap="coolwarm", vmin=-1, vmax=1)
    axis.set_xticks(range(len(numeric.columns)), numeric.columns, rotation=90, fontsize=6)
    axis.set_yticks(range(len(numeric.columns)), numeric.columns, fontsize=6)
    figure.colorbar(image)
    axis.set_title("Pearson correlation")
    figures.save(figure, path)


def _markdown(report: dict) -> str:
    lines = [f"# Dataset analysis: {report['source']}", "", f"- kind: {report['kind']}, task: {report['task']}, "
             f"items: {report['items']}"]
    baseline = report["baseline"]
    lines.append(f"- baseline ({baseline['model']}, {baseline['cv_folds']}-fold CV): {baseline['metric']} "
                 f"{baseline['score_mean']:.4f} +/- {baseline['score_std']:.4f}")
    skip = {"source", "kind", "task", "items", "baseline"}
    for key, value in report.items():
        if key not in skip:
            text = str(value)
            lines.append(f"- {key.replace('_', ' ')}: {text[:600]}{' ...' if len(text) > 600 else ''}")
    return "\n".join(lines) + "\n"


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Profiles the raw data and fits a quick baseline; writes report.{md,json} and plots."""

    def body(folder: Path) -> dict:
        raw = sources.load(config.data, config.root)
        if isinstance(raw, signals.Recordings):
            report = signal_profile(raw, config.data, config.split.seed)
            _signal_grid(raw, config.data, folder / "samples.png")
        elif raw.kind == "images":
            report = image_profile(raw, config.split.seed)
            _sample_grid(raw, folder / "samples.png")
        else:
            report = tables.profile(raw, config.data)
            report["baseline"] = table_baseline(raw, config.data, config.split.seed)
            _correlation_plot(raw, folder / "correlations.png")
        if "class_counts" in report:
            _bar(report["class_counts"], "Items per class", folder / "class_counts.png")
        workspace.write_json(folder / "report.json", report)
        workspace.write_text(folder / "report.md", _markdown(report))
        mlflow.log_artifacts(str(folder), "analysis")
        metrics = {"analyze/items": report["items"], "analyze/baseline_score": report["baseline"]["score_mean"]}
        if "imbalance_ratio" in report:
            metrics["analyze/imbalance_ratio"] = report["imbalance_ratio"]
        if report["kind"] == "images":
            metrics.update({"analyze/exact_duplicates": report["exact_duplicate_extra_items"],
                            "analyze/unreadable": len(report["unreadable"])})
        tracking.log_metrics(metrics)
        return metrics

    inputs = {"source": sources.fingerprint(config.data, config.root)}
    return stage.execute(config, "analyze", ("data", "split.seed"), inputs, body, force)
