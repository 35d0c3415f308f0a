"""Data health: label issues from out-of-fold predictions over train+val, found with cleanlab.

Split calls `check` once its splits are written. A quick scikit-learn model (`health.model`) is
cross-validated over the training and validation items only, on the kind's cheap features (thumbnails,
encoded rows, window statistics: `kind.features`, built chunk by chunk), with folds that keep the split's groups
(exact and near duplicates, declared groups, recordings) whole; the test split is never read. cleanlab
(`filter.find_label_issues`, `dataset.rank_classes_by_label_quality`) turns the out-of-fold probabilities into
suspects and a health score per class. Writes `label_issues.csv` (per suspect: given and suspected label, the
model's confidence, its label quality, what was done), `health.json` and, for images, `health_suspects.png`.
With `health.action: exclude` the suspects at or above `min_confidence` leave train and val (their arrays are
rewritten without them); a reviewer's own decisions go through `data.relabel` / `data.exclude` instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from pipelines.core import config as config_module
from pipelines.core import figures, workspace
from pipelines.data import kinds, splits

ISSUES = "label_issues.csv"
HEADER = ("id", "split", "given", "suspected", "confidence", "label_quality", "action")


def _model(name: str, features: int, seed: int):
    """The quick model of the out-of-fold predictions, by name."""
    if name == "knn":
        return make_pipeline(StandardScaler(), PCA(min(30, features), random_state=seed),
                             KNeighborsClassifier(10, weights="distance"))
    if name == "svm":
        return make_pipeline(StandardScaler(), SVC(probability=True, random_state=seed))
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.1, random_state=seed))


def out_of_fold(features, labels: np.ndarray, groups: np.ndarray, health: config_module.HealthConfig,
                seed: int, encoder=None) -> np.ndarray:
    """Each item's class probabilities from a model that never saw it (nor any item of its group); `encoder`
    (an unfitted scikit-learn transformer, for raw table rows) is fitted inside each fold."""
    folds = int(min(health.folds, np.bincount(labels).min()))
    if folds < 2:
        raise ValueError("health: a class has fewer than 2 items in train+val; no cross-validation is possible")
    grouped = len(np.unique(groups)) < len(groups)
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed) if grouped else \
        StratifiedKFold(folds, shuffle=True, random_state=seed)
    width = features.shape[1] if encoder is None else len(encoder.fit(features).get_feature_names_out())
    model = _model(health.model, width, seed)
    if encoder is not None:
        model = make_pipeline(encoder, *[step for _, step in model.steps])
    try:
        return cross_val_predict(model, features, labels, cv=splitter, groups=groups if grouped else None,
                                 method="predict_proba")
    except ValueError:  # groups too uneven to stratify every fold: whole groups, unstratified
        return cross_val_predict(model, features, labels, cv=GroupKFold(folds), groups=groups,
                                 method="predict_proba")


def summary(features, labels: np.ndarray, groups: np.ndarray | None, ids, class_names, config: config_module.Config,
            encoder=None) -> dict:
    """Analyze's health section: label issues over the items outside the test share the split would hold out
    (`splits.analysis_folds`, groups whole), counts, the health per class and the 20 worst suspects. Split's
    check (`check`) is the one that acts."""
    labels = np.asarray(labels).astype(np.int64)
    pool, _, how = splits.analysis_folds(len(labels), labels, groups, None, config.split)
    grouping = np.arange(len(labels)) if groups is None else np.asarray(groups).astype(str)
    subset = features.iloc[pool] if hasattr(features, "iloc") else np.asarray(features)[pool]
    probabilities = out_of_fold(subset, labels[pool], grouping[pool], config.health, config.split.seed, encoder)
    mask, scores = issues(labels[pool], probabilities, list(class_names))
    flagged = np.flatnonzero(mask)
    quality = probabilities[flagged, labels[pool][flagged]]
    worst = flagged[np.argsort(quality, kind="stable")][:20]
    return {"model": config.health.model, "evaluated_on": how, "items": len(pool), "label_issues": int(mask.sum()),
            "issue_fraction": round(float(mask.mean()), 4), "class_health": scores,
            "worst_suspects": [[str(ids[pool[position]]), class_names[labels[pool][position]],
                                class_names[int(probabilities[position].argmax())],
                                round(float(probabilities[position].max()), 4)] for position in worst]}


def issues(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> tuple[np.ndarray, dict]:
    """(suspect mask, health score per class name: cleanlab's label quality score, 1 is clean)."""
    from cleanlab.dataset import rank_classes_by_label_quality
    from cleanlab.filter import find_label_issues

    mask = find_label_issues(labels, probabilities)
    ranked = rank_classes_by_label_quality(labels=labels, pred_probs=probabilities)
    scores = {class_names[int(row["Class Index"])]: round(float(row["Label Quality Score"]), 4)
              for _, row in ranked.iterrows()}
    return mask, {name: scores.get(name, 1.0) for name in class_names}


def _gallery(reader, positions: np.ndarray, rows: list[tuple], path: Path) -> None:
    """The worst suspects, each titled with its id and given -> suspected label."""
    items = reader.subset(positions).array() if len(positions) else np.zeros((0,))
    columns = min(8, len(positions))
    lines = -(-len(positions) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(1.6 * columns, 2.3 * lines), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, item, row in zip(axes.ravel(), items, rows):
        axis.imshow(item[..., 0] if item.shape[-1] == 1 else item, cmap="gray")
        axis.set_title(f"{row[0][-14:]}\n{row[2]} -> {row[3]} ({float(row[4]):.2f})", fontsize=6)
    figure.suptitle("Label-issue suspects, worst first: id, given -> suspected (confidence)")
    figures.save(figure, path)


def _exclude(folder: Path, assignment: splits.Assignment, gone: np.ndarray) -> splits.Assignment:
    """Leaves the items at indices `gone` out of train and val: every array the kind stored per split loses
    their rows, and the manifest no longer lists them."""
    parts = dict(assignment.parts)
    for name in ("train", "val"):
        keep = ~np.isin(parts[name], gone)
        if keep.all():
            continue
        for path in sorted(folder.glob(f"{name}_*.npy")):
            field = path.stem[len(name) + 1:]
            array, = workspace.load_arrays(folder, name, field)
            workspace.save_arrays(folder, name, **{field: array[keep]})
        parts[name] = parts[name][keep]
    return dataclasses.replace(assignment, parts=parts)


def check(folder: Path, assignment: splits.Assignment, dataset: dict, config: config_module.Config
          ) -> tuple[splits.Assignment, dict]:
    """Finds label issues over train+val of the split written in `folder`; writes the report files and, with
    `health.action: exclude`, leaves the confident suspects out. Returns the assignment (less them) and the
    `split/health/*` metrics."""
    health = config.health
    if dataset["task"] != "classification":
        print("[split] health: label issues are found for classification only; skipped")
        return assignment, {}
    kind = kinds.get(dataset["kind"])
    pool = np.concatenate([assignment.parts["train"], assignment.parts["val"]])
    reader = splits.split_items(folder, "train").joined(splits.split_items(folder, "val"))
    features = np.asarray(kind.features(reader), dtype=np.float32).reshape(len(pool), -1)
    labels = np.asarray(assignment.labels)[pool].astype(np.int64)
    probabilities = out_of_fold(features, labels, np.asarray(assignment.grouping)[pool], health, config.split.seed)
    mask, scores = issues(labels, probabilities, dataset["class_names"])
    suspected, names = probabilities.argmax(axis=1), dataset["class_names"]
    confidence = probabilities[np.arange(len(pool)), suspected]
    quality = probabilities[np.arange(len(pool)), labels]
    flagged = np.flatnonzero(mask)  # worst first: the given label least likely, the other one most
    order = [int(position) for position in flagged[np.lexsort((-confidence[flagged], quality[flagged]))]]
    excluded = [position for position in order if health.action == "exclude"
                and confidence[position] >= health.min_confidence]
    split_of = np.where(np.arange(len(pool)) < len(assignment.parts["train"]), "train", "val")
    rows = [(str(assignment.ids[pool[position]]), split_of[position], names[labels[position]],
             names[suspected[position]], f"{confidence[position]:.4f}", f"{quality[position]:.4f}",
             "excluded" if position in set(excluded) else "reported") for position in order]
    workspace.write_text(folder / ISSUES, workspace.csv_text(HEADER, rows))
    counts = np.bincount(labels, minlength=len(names))
    per_class = np.bincount(labels[mask], minlength=len(names))
    workspace.write_json(folder / "health.json", {
        "model": health.model, "folds": health.folds, "items": len(pool), "label_issues": len(order),
        "excluded": len(excluded), "class_health": scores,
        "class_issues": {name: int(count) for name, count in zip(names, per_class)},
        "class_items": {name: int(count) for name, count in zip(names, counts)}})
    if len(reader.shape) == 4 and order and health.gallery:  # images: show the worst suspects
        worst = order[:health.gallery]
        _gallery(reader, np.array(worst), rows[:len(worst)], folder / "health_suspects.png")
    if excluded:
        assignment = _exclude(folder, assignment, pool[excluded])
    return assignment, {"split/health/label_issues": len(order), "split/health/excluded": len(excluded),
                        "split/health/issue_fraction": len(order) / max(len(pool), 1),
                        "split/health/worst_class_health": min(scores.values())}
