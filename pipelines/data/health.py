"""Data health: label issues from out-of-fold predictions over train+val, found with cleanlab.

Split calls `check` once its splits are written. A quick scikit-learn model (`health.model`) is
cross-validated over the training and validation items only, on the kind's cheap features (thumbnails,
encoded rows, window statistics: `kind.features`, built chunk by chunk), with folds that keep the split's groups
(exact and near duplicates, declared groups, recordings) whole; the test split is never read. cleanlab
(`filter.find_label_issues`, `dataset.rank_classes_by_label_quality`) turns the out-of-fold probabilities into
suspects and a health score per class. Writes `label_issues.csv` (per suspect: given and suspected label, the
model's confidence, its label quality, what was done), `health.json` and, for images, `health_suspects.png`.
Beside the label issues, cleanlab's `Datalab` finds outliers and near-duplicates on a kNN graph of the same
cheap features (standardized, 30 principal components, as the kNN model sees them): `data_issues.csv` lists
them per item, `health.json` counts them, and for images `health_outliers.png` shows the worst outliers. They
are reported only: `health.action: exclude` acts on label issues alone.
With `health.action: exclude` the suspects at or above `min_confidence` leave train and val (their arrays are
rewritten without them); a reviewer's own decisions go through `data.relabel` / `data.exclude` instead.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.base import clone
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
DATA_ISSUES = "data_issues.csv"
DATA_HEADER = ("id", "split", "label", "issue", "score", "nearest")
NEIGHBOURS = 10  # the kNN graph of Datalab's outlier and near-duplicate checks (cleanlab's default k)


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
    (`splits.analysis_folds`, groups whole), counts, the health per class and the 20 worst suspects; outliers
    and near-duplicates (Datalab, `data_issues`) counted, with the 20 worst outliers. Split's check (`check`) is
    the one that acts."""
    labels = np.asarray(labels).astype(np.int64)
    pool, _, how = splits.analysis_folds(len(labels), labels, groups, None, config.split)
    grouping = np.arange(len(labels)) if groups is None else np.asarray(groups).astype(str)
    subset = features.iloc[pool] if hasattr(features, "iloc") else np.asarray(features)[pool]
    probabilities = out_of_fold(subset, labels[pool], grouping[pool], config.health, config.split.seed, encoder)
    mask, scores = issues(labels[pool], probabilities, list(class_names))
    flagged = np.flatnonzero(mask)
    quality = probabilities[flagged, labels[pool][flagged]]
    worst = flagged[np.argsort(quality, kind="stable")][:20]
    numeric = subset if encoder is None else clone(encoder).fit_transform(subset)  # Datalab needs numbers
    found = data_issues(numeric, labels[pool], config.split.seed)
    return {"model": config.health.model, "evaluated_on": how, "items": len(pool), "label_issues": int(mask.sum()),
            "issue_fraction": round(float(mask.mean()), 4), "outliers": int(found["outlier"].sum()),
            "near_duplicates": int(found["near_duplicate"].sum()), "class_health": scores,
            "worst_suspects": [[str(ids[pool[position]]), class_names[labels[pool][position]],
                                class_names[int(probabilities[position].argmax())],
                                round(float(probabilities[position].max()), 4)] for position in worst],
            "worst_outliers": [[str(ids[pool[position]]), class_names[labels[pool][position]],
                                round(float(found["outlier_score"][position]), 4)]
                               for issue, position in _data_issue_order(found)[:20] if issue == "outlier"]}


def issues(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> tuple[np.ndarray, dict]:
    """(suspect mask, health score per class name: cleanlab's label quality score, 1 is clean)."""
    from cleanlab.dataset import rank_classes_by_label_quality
    from cleanlab.filter import find_label_issues

    mask = find_label_issues(labels, probabilities)
    ranked = rank_classes_by_label_quality(labels=labels, pred_probs=probabilities)
    scores = {class_names[int(row["Class Index"])]: round(float(row["Label Quality Score"]), 4)
              for _, row in ranked.iterrows()}
    return mask, {name: scores.get(name, 1.0) for name in class_names}


def data_issues(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """Outliers and near-duplicates among the items, found by cleanlab's `Datalab` on a kNN graph (k = 10) of
    the standardized features' first 30 principal components: per item, the flags and scores (1 is clean) of
    both issues and its nearest neighbour's position. Fewer than k + 2 items: nothing is flagged."""
    count = len(labels)
    if count < NEIGHBOURS + 2:
        empty = np.zeros(count, bool)
        return {"outlier": empty, "outlier_score": np.ones(count), "near_duplicate": empty,
                "near_duplicate_score": np.ones(count), "nearest": np.arange(count)}
    from cleanlab import Datalab

    features = np.asarray(features, dtype=np.float32).reshape(count, -1)
    reduced = make_pipeline(StandardScaler(), PCA(min(30, *features.shape), random_state=seed)).fit_transform(features)
    lab = Datalab({"label": np.asarray(labels)}, label_name="label", verbosity=0)
    graph = {"k": NEIGHBOURS, "metric": "euclidean"}  # the distance of the kNN model (cleanlab picks cosine)
    lab.find_issues(features=reduced, issue_types={"outlier": graph, "near_duplicate": graph})
    found = lab.get_issues()
    return {"outlier": found["is_outlier_issue"].to_numpy(bool), "outlier_score": found["outlier_score"].to_numpy(),
            "near_duplicate": found["is_near_duplicate_issue"].to_numpy(bool),
            "near_duplicate_score": found["near_duplicate_score"].to_numpy(),
            "nearest": np.asarray(lab.get_info("near_duplicate")["nearest_neighbor"], dtype=np.int64)}


def _data_issue_order(found: dict) -> list[tuple[str, int]]:
    """(issue, position) of every flagged item: outliers, then near-duplicates, each lowest score first."""
    order = []
    for issue in ("outlier", "near_duplicate"):
        flagged = np.flatnonzero(found[issue])
        order += [(issue, int(position)) for position in flagged[np.argsort(found[f"{issue}_score"][flagged],
                                                                             kind="stable")]]
    return order


def _gallery(reader, positions: np.ndarray, titles: list[str], heading: str, path: Path) -> None:
    """The items at `positions` of the reader, each with its title."""
    items = reader.subset(positions).array() if len(positions) else np.zeros((0,))
    columns = min(8, len(positions))
    lines = -(-len(positions) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(1.6 * columns, 2.3 * lines), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, item, title in zip(axes.ravel(), items, titles):
        axis.imshow(item[..., 0] if item.shape[-1] == 1 else item, cmap="gray")
        axis.set_title(title, fontsize=6)
    figure.suptitle(heading)
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
    found = data_issues(features, labels, config.split.seed)  # outliers and near-duplicates (Datalab)
    del features
    flagged_data = _data_issue_order(found)
    ids = [str(assignment.ids[index]) for index in pool]
    workspace.write_text(folder / DATA_ISSUES, workspace.csv_text(DATA_HEADER, [
        (ids[position], split_of[position], names[labels[position]], issue,
         f"{found[issue + '_score'][position]:.4f}", ids[found["nearest"][position]])
        for issue, position in flagged_data]))
    counts = np.bincount(labels, minlength=len(names))
    per_class = np.bincount(labels[mask], minlength=len(names))
    outliers = np.bincount(labels[found["outlier"]], minlength=len(names))
    workspace.write_json(folder / "health.json", {
        "model": health.model, "folds": health.folds, "items": len(pool), "label_issues": len(order),
        "excluded": len(excluded), "outliers": int(found["outlier"].sum()),
        "near_duplicates": int(found["near_duplicate"].sum()), "class_health": scores,
        "class_issues": {name: int(count) for name, count in zip(names, per_class)},
        "class_outliers": {name: int(count) for name, count in zip(names, outliers)},
        "class_items": {name: int(count) for name, count in zip(names, counts)}})
    if len(reader.shape) == 4 and health.gallery:  # images: show the worst suspects and outliers
        worst = order[:health.gallery]
        if worst:
            _gallery(reader, np.array(worst), [f"{row[0][-14:]}\n{row[2]} -> {row[3]} ({float(row[4]):.2f})"
                                               for row in rows[:len(worst)]],
                     "Label-issue suspects, worst first: id, given -> suspected (confidence)",
                     folder / "health_suspects.png")
        strange = [position for issue, position in flagged_data if issue == "outlier"][:health.gallery]
        if strange:
            _gallery(reader, np.array(strange), [f"{ids[position][-14:]}\n{names[labels[position]]} "
                                                 f"({found['outlier_score'][position]:.2f})" for position in strange],
                     "Outliers, most unusual first: id, label (outlier score; 1 is typical)",
                     folder / "health_outliers.png")
    if excluded:
        assignment = _exclude(folder, assignment, pool[excluded])
    return assignment, {"split/health/label_issues": len(order), "split/health/excluded": len(excluded),
                        "split/health/issue_fraction": len(order) / max(len(pool), 1),
                        "split/health/worst_class_health": min(scores.values()),
                        "split/health/outliers": int(found["outlier"].sum()),
                        "split/health/near_duplicates": int(found["near_duplicate"].sum())}


def class_metrics(report: dict) -> dict[str, float]:
    """Per class of a `health.json`: `split/health/class_health/<class>`, `.../class_issues/<class>` and
    `.../class_outliers/<class>` (characters MLflow refuses in a metric name become `_`)."""
    return {f"split/health/{field}/{re.sub(r'[^A-Za-z0-9_. /-]', '_', name)}": float(value)
            for field in ("class_health", "class_issues", "class_outliers")
            for name, value in report.get(field, {}).items()}
