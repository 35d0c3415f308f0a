"""Benchmark `sensors`: the two sensor presets end to end, each beside a scikit-learn model on the same
windows and split.

- `configs/motions.yaml` (BasicMotions, 4 activities): the 1-D CNN's test accuracy and its int8 model's on
  LiteRT, against a random forest (300 trees) on per-channel window statistics (mean, std, min, max, mean
  absolute step) trained on the same training windows.
- `configs/bleeding_anomaly.yaml` (UCR anomaly archive 135, one labelled anomaly): the autoencoder's test
  ROC-AUC, PR-AUC and F1 at its validation threshold (evaluate's report), in float and as the bundled TF-Lite
  variant (`bleeding_anomaly_<variant>_*`), against an IsolationForest (300 trees) on the same per-channel
  statistics of the normal training windows.
The Daphnet excerpt that ships with aeon holds no labelled freezing episode, so no gait figures exist.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.metrics import roc_auc_score

from pipelines import __main__ as cli
from pipelines.core import workspace
from pipelines.data import signals

WORK = Path(__file__).parent / ".work" / "sensors"
REPOSITORY = Path(__file__).parent.parent


def _pipeline(config_file: str, experiment: str) -> Path:
    if cli.main(["all", "--config", str(REPOSITORY / config_file), "--set", f"runtime.root={WORK}"]) != 0:
        raise RuntimeError(f"bench sensors: the pipeline failed on {config_file}")
    return workspace.stage_dir(WORK, experiment, "split")


def _arrays(split_folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    return workspace.load_arrays(split_folder, name, "x", "y")


def run() -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    figures = {}
    split_folder = _pipeline("configs/motions.yaml", "motions")
    report = workspace.read_json(workspace.stage_dir(WORK, "motions", "evaluate") / "test_report.json")
    variant = report["record"]["tflite_variant"]
    (x_train, y_train), (x_test, y_test) = _arrays(split_folder, "train"), _arrays(split_folder, "test")
    forest = RandomForestClassifier(n_estimators=300, random_state=0).fit(signals.summary_features(x_train), y_train)
    figures.update({"motions_test_accuracy": report["results"]["keras"]["accuracy"],
                    f"motions_{variant}_test_accuracy": report["results"][variant]["accuracy"],
                    "motions_baseline_accuracy": float((forest.predict(signals.summary_features(x_test))
                                                        == y_test).mean()),
                    "motions_test_windows": int(len(y_test))})
    split_folder = _pipeline("configs/bleeding_anomaly.yaml", "bleeding_anomaly")
    report = workspace.read_json(workspace.stage_dir(WORK, "bleeding_anomaly", "evaluate") / "test_report.json")
    results, variant = report["results"], report["record"]["tflite_variant"]
    (x_train, y_train), (x_test, y_test) = _arrays(split_folder, "train"), _arrays(split_folder, "test")
    isolation = IsolationForest(n_estimators=300, random_state=0).fit(signals.summary_features(x_train[y_train == 0]))
    for name, prefix in (("keras", "bleeding_anomaly"), (variant, f"bleeding_anomaly_{variant}")):
        figures.update({f"{prefix}_{key}": results[name][key] for key in ("roc_auc", "pr_auc", "f1")})
    figures["bleeding_isolation_forest_roc_auc"] = float(roc_auc_score(
        y_test, -isolation.score_samples(signals.summary_features(x_test))))
    figures["bleeding_test_anomalous_windows"] = int(y_test.sum())
    return figures
