"""Benchmark `health`: label issues found by split (`health.action`) against planted label errors.

Digits (1,797 images at 16x16) split at random (the assignment then depends on the pixels and the seed only, so
flipping labels moves no item between splits); 5% of the train+val items, chosen with a seeded generator, get
another random class through the review loop (`data.relabel`), the test split keeps its true labels.
`label_issue_recall` is the share of flipped items that health reports, `label_issue_precision` the share of
reported items that were flipped. `exclude_accuracy_gap` is the test accuracy of the export gate's classical
model (logistic regression on the kind's features, fitted on the training split) trained on the clean labels
minus the same with the flipped labels and `health.action: exclude` (`noisy_accuracy_gap`: flipped labels,
nothing excluded). `clean_flagged_fraction`: the share of train+val items reported on the unflipped digits.
The same flip on breast_cancer gives `table_label_issue_recall` and `table_label_issue_precision`.
`health_peak_rss_mb`: the process's peak resident memory after all of it.
"""

from __future__ import annotations

import resource
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.data import health, kinds, splits
from pipelines.stages import clean, split

SHARE, SEED = 0.05, 0


def _config(root: Path, source: str, *extra: str) -> config_module.Config:
    architecture = "mlp" if source in config_module.TABLE_SOURCES else "small_cnn"
    return config_module.load(None, [f"runtime.root={root}", f"experiment=bench_health_{source}",
                                     f"data.source={source}", f"model.architecture={architecture}",
                                     "split.strategy=random", f"split.seed={SEED}", *extra])


def _pool(folder: Path) -> dict[str, tuple[str, str]]:
    """id -> (split, label) of every train and val item of the manifest."""
    items = workspace.read_json(folder / splits.MANIFEST)["items"]
    return {item["id"]: (item["split"], item["label"]) for item in items if item["split"] != "test"}


def _flip(root: Path, folder: Path, class_names: list[str]) -> set[str]:
    """Writes relabel.csv: SHARE of the train+val items, each to another random class; returns their ids."""
    pool = _pool(folder)
    rng = np.random.default_rng(SEED)
    chosen = sorted(rng.choice(sorted(pool), int(SHARE * len(pool)), replace=False).tolist())
    rows = []
    for item in chosen:
        given = int(pool[item][1])
        rows.append((item, class_names[(given + int(rng.integers(1, len(class_names)))) % len(class_names)]))
    workspace.write_text(root / "relabel.csv", workspace.csv_text(("id", "label"), rows))
    return set(chosen)


def _found(folder: Path) -> set[str]:
    return set(pd.read_csv(folder / health.ISSUES, dtype=str)["id"]) if (folder / health.ISSUES).is_file() else set()


def _test_accuracy(folder: Path) -> float:
    """The export gate's classical model, fitted on the training split's features, scored on the test split."""
    dataset = workspace.read_json(folder / "dataset.json")
    kind = kinds.get(dataset["kind"])
    fitted = {}
    for name in ("train", "test"):
        labels, = workspace.load_arrays(folder, name, "y")
        fitted[name] = (kind.features(splits.split_items(folder, name)), labels)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=SEED))
    model.fit(*fitted["train"])
    return float(model.score(*fitted["test"]))


def _run(root: Path, source: str, *extra: str) -> Path:
    config = _config(root, source, *extra)
    clean.run(config, force=True)
    return split.run(config, force=True).folder


def _recall_precision(found: set[str], flipped: set[str]) -> tuple[float, float]:
    hits = len(found & flipped)
    return round(hits / max(len(flipped), 1), 4), round(hits / max(len(found), 1), 4)


def run() -> dict:
    work = Path(__file__).parent / ".work" / "health"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    figures = {}
    for source, prefix in (("digits", ""), ("breast_cancer", "table_")):
        root = work / source
        root.mkdir()
        folder = _run(root, source, "health.action=report")
        class_names = workspace.read_json(folder / "dataset.json")["class_names"]
        pool = _pool(folder)
        if source == "digits":
            figures["clean_flagged_fraction"] = round(len(_found(folder)) / len(pool), 4)
            clean_accuracy = _test_accuracy(folder)
        flipped = _flip(root, folder, class_names)
        folder = _run(root, source, "health.action=report", "data.relabel=relabel.csv")
        if set(_pool(folder)) != set(pool):
            raise AssertionError("flipping labels moved items between splits")
        found = _found(folder)
        figures[f"{prefix}label_issue_recall"], figures[f"{prefix}label_issue_precision"] = \
            _recall_precision(found, flipped)
        figures[f"{prefix}flipped_items"], figures[f"{prefix}reported_items"] = len(flipped), len(found)
        if source == "digits":
            noisy_accuracy = _test_accuracy(folder)
            folder = _run(root, source, "health.action=exclude", "data.relabel=relabel.csv")
            excluded = set(pd.read_csv(folder / health.ISSUES, dtype=str).query("action == 'excluded'")["id"])
            figures["excluded_items"], figures["excluded_flipped"] = len(excluded), len(excluded & flipped)
            figures["clean_test_accuracy"] = round(clean_accuracy, 4)
            figures["exclude_accuracy_gap"] = round(clean_accuracy - _test_accuracy(folder), 4)
            figures["noisy_accuracy_gap"] = round(clean_accuracy - noisy_accuracy, 4)
    figures["health_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"[bench] health: {figures}")
    return figures
