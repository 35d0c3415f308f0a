"""Benchmark `sensors`: the two sensor presets end to end, each beside a scikit-learn model on the same
windows and split.

- `configs/motions.yaml` (BasicMotions, 4 activities): the 1-D CNN's test accuracy and its int8 model's on
  LiteRT, against a random forest (300 trees) on per-channel window statistics (mean, std, min, max, mean
  absolute step) trained on the same training windows.
- `configs/bleeding_anomaly.yaml` (UCR anomaly archive 135, one labelled anomaly): the autoencoder's test
  ROC-AUC, PR-AUC and F1 at its validation threshold (evaluate's report), in float and as the bundled TF-Lite
  variant (`bleeding_anomaly_<variant>_*`), against an IsolationForest (300 trees) on the same per-channel
  statistics of the normal training windows.
- the UCR/UEA classification archive inside the aeon wheel (`ARCHIVE`): each dataset's TRAIN and TEST files become
  `sensor_csv` recordings, one CSV per series plus a split file, and go through the pipeline with the default config
  apart from the data fields and `model.architecture: cnn1d` (`split.strategy: predefined`: the archive's own test
  split; one window per series, as long as the longest training series, shorter series padded with their last value,
  longer ones voted over their windows). Per dataset: the per-recording test accuracy of the Keras model and of its
  int8 model, whether the int8 model fits `cortex_m4`, and on the same split a 1-NN (Euclidean) and a random forest
  (300 trees) on the raw windows, fitted on the given training part (train+val). Nothing is set per dataset;
  `sensors_min_accuracy_minus_1nn` and `sensors_mean_accuracy_minus_1nn` sum it up.
  A quick check of some of them, with overrides, writes nothing to results.json:
  `python -c "from bench import sensors; print(sensors.run_archive(('GunPoint',), ['train.epochs=3']))"`.
The Daphnet excerpt that ships with aeon holds no labelled freezing episode, so no gait figures exist.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier

import deploy.edge.predict as edge
from pipelines import __main__ as cli
from pipelines.core import workspace
from pipelines.data import signals
from pipelines.training import evaluation

WORK = Path(__file__).parent / ".work" / "sensors"
REPOSITORY = Path(__file__).parent.parent


def _pipeline(config_file: str, experiment: str) -> Path:
    if cli.main(["all", "--config", str(REPOSITORY / config_file), "--set", f"runtime.root={WORK}"]) != 0:
        raise RuntimeError(f"bench sensors: the pipeline failed on {config_file}")
    return workspace.stage_dir(WORK, experiment, "split")


def _arrays(split_folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    return workspace.load_arrays(split_folder, name, "x", "y")


# The classification datasets inside the aeon 1.6.0 wheel that a 2-core machine trains in minutes. Left out:
# ACSF1 (series of 1,460 samples: hours of the default network's training per search on 2 cores), UnitTest (a
# 24-sample excerpt aeon's own tests read), Covid3Month_disc (a regression target cut into three bins, not an
# archive dataset; its TRAIN and TEST files share 2 identical series, which the leakage check stops on, as it
# should), the `_eq` copies (the same series padded by aeon), and the regression and forecasting files
# (CardanoSentiment, Covid3Month and the CSV series).
ARCHIVE = ("ItalyPowerDemand", "JapaneseVowels", "GunPoint", "BasicMotions", "ArrowHead", "PickupGestureWiimoteZ",
           "OSULeaf")  # the cheapest first
RATES = {"BasicMotions": 10.0}  # samples per second where the archive says; the others name no rate


def convert(name: str, target: Path) -> tuple[int, int]:
    """A dataset's TRAIN and TEST `.ts` files -> `target/recordings/<part>-<index>.csv` (one series each, columns
    c0..c<C-1> and `label`) and `target/split.csv` (recording,split). Returns (channels, the longest training
    series): the data fields of its config."""
    folder = signals.aeon_data_folder() / name
    recordings, rows, longest, channels = target / "recordings", [], 0, 0
    recordings.mkdir(parents=True, exist_ok=True)
    for part in ("TRAIN", "TEST"):
        cases, labels, _ = signals.read_ts(folder / f"{name}_{part}.ts")
        for index, (case, label) in enumerate(zip(cases, labels)):
            recording = f"{part.lower()}-{index:04d}"
            frame = pd.DataFrame(case, columns=[f"c{channel}" for channel in range(case.shape[1])])
            frame["label"] = label
            frame.to_csv(recordings / f"{recording}.csv", index=False)
            rows.append((recording, part.lower()))
            channels = case.shape[1]
            longest = max(longest, len(case)) if part == "TRAIN" else longest
    workspace.write_text(target / "split.csv", workspace.csv_text(("recording", "split"), rows))
    return channels, longest


def _voted(ids: np.ndarray, y: np.ndarray, scores: np.ndarray, rule: str,
           decision: tuple[float, int] | None = None) -> float:
    """Per-recording accuracy of window scores (class probabilities, or one-hot decisions) by the vote rule
    (and a binary model's decision threshold, as evaluate and the bundle's predictor decide)."""
    fixed = {"bootstrap_resamples": 0, "confidence": 0.95, "seed": 0}
    return evaluation.per_recording(y, {"model": scores}, ids, rule, decision, fixed)["models"]["model"][
        "recording_accuracy"]


def archive_dataset(name: str, extra: list[str]) -> dict:
    """One archive dataset through the pipeline, and its baselines on the same split."""
    key, experiment = name.lower(), f"ucr_{name.lower()}"
    channels, longest = convert(name, WORK / "ucr" / name)
    fields = ["data.source=sensor_csv", f"data.path=ucr/{name}/recordings", "data.target=label",
              f"data.signal_channels=[{', '.join(f'c{channel}' for channel in range(channels))}]",
              f"data.sampling_rate={RATES.get(name, 1.0)}", f"data.window={longest}", f"data.stride={longest}",
              "data.short_recordings=pad", "split.strategy=predefined", f"split.file=ucr/{name}/split.csv",
              "model.architecture=cnn1d", f"experiment={experiment}", f"runtime.root={WORK}"]  # the sensor model
    # a model that fails export's gates is still bundled and scored, tagged (`_blessed` says which)
    arguments = ["all", "--allow-unblessed"] + [part for field in fields + extra for part in ("--set", field)]
    if cli.main(arguments) != 0:
        raise RuntimeError(f"bench sensors: the pipeline failed on {name}")
    split_folder = workspace.stage_dir(WORK, experiment, "split")
    report = workspace.read_json(workspace.stage_dir(WORK, experiment, "evaluate") / "test_report.json")
    table = workspace.read_json(workspace.stage_dir(WORK, experiment, "export") / "export_table.json")
    exported = workspace.read_json(workspace.stage_dir(WORK, experiment, "export") / "manifest.json")["metrics"]
    dataset = workspace.read_json(split_folder / "dataset.json")
    rule = dataset.get("recording_vote", "mean")
    shipped = workspace.read_json(workspace.bundle_dir(WORK, experiment) / "metadata.json")
    decision = (shipped["decision_threshold"], shipped["positive_index"]) if "decision_threshold" in shipped else None
    parts = {part: workspace.load_arrays(split_folder, part, "x", "y", "ids") for part in ("train", "val", "test")}
    x_fit = np.concatenate([parts["train"][0], parts["val"][0]]).reshape(-1, longest * channels)
    y_fit = np.concatenate([parts["train"][1], parts["val"][1]])
    x_test, y_test, ids = parts["test"]
    flat, classes = x_test.reshape(len(x_test), -1), len(dataset["class_names"])
    one_hot = np.eye(classes, dtype=np.float32)
    nearest = KNeighborsClassifier(n_neighbors=1).fit(x_fit, y_fit).predict(flat)
    forest = RandomForestClassifier(n_estimators=300, random_state=0).fit(x_fit, y_fit)
    forest_scores = np.zeros((len(flat), classes), np.float32)
    forest_scores[:, forest.classes_] = forest.predict_proba(flat)
    int8 = edge.LiteRTModel(workspace.stage_dir(WORK, experiment, "export") / "int8.tflite").predict(x_test)
    accuracy = report["recordings"]["models"]["keras"]["recording_accuracy"]
    return {f"{key}_recording_accuracy": accuracy,
            f"{key}_int8_recording_accuracy": _voted(ids, y_test, int8, rule, decision),
            f"{key}_1nn_accuracy": _voted(ids, y_test, one_hot[nearest], "majority"),
            f"{key}_forest_accuracy": _voted(ids, y_test, forest_scores, rule),
            f"{key}_fits_cortex_m4": int(table["targets"]["cortex_m4"]["variants"]["int8"]["verdict"] == "fits"),
            f"{key}_blessed": int(exported.get("export/blessed", 1)),
            f"{key}_test_recordings": report["recordings"]["recordings"], f"{key}_window": longest}


def run_archive(names: tuple[str, ...] = ARCHIVE, extra: list[str] = (), checkpoint=None) -> dict:
    """The archive's figures and their summary; `checkpoint(figures)` sees them after each dataset."""
    figures, gaps, drops, done = {}, [], [], []
    for name in names:
        found = archive_dataset(name, list(extra))
        figures.update(found)
        key = name.lower()
        done.append(name)
        gaps.append(found[f"{key}_recording_accuracy"] - found[f"{key}_1nn_accuracy"])
        drops.append(found[f"{key}_recording_accuracy"] - found[f"{key}_int8_recording_accuracy"])
        figures.update({"sensors_min_accuracy_minus_1nn": float(min(gaps)),
                        "sensors_mean_accuracy_minus_1nn": float(np.mean(gaps)),
                        "sensors_max_int8_recording_drop": float(max(drops)),
                        "sensors_all_fit_cortex_m4": int(all(figures[f"{item.lower()}_fits_cortex_m4"]
                                                             for item in done)),
                        "sensors_archive_datasets": len(done)})
        if checkpoint is not None:
            checkpoint(figures)
    return figures


def _checkpoint(figures: dict) -> None:
    """Merges the archive's figures so far into the `sensors` entry of results.json (read again just before
    writing), so a long run that stops keeps what it measured; the runner writes the whole entry at the end."""
    import json
    import time

    from bench import __main__ as runner

    results = json.loads(runner.RESULTS.read_text()) if runner.RESULTS.is_file() else {}
    entry = results.get("sensors", {})
    done = figures["sensors_archive_datasets"]
    results["sensors"] = {**entry, "figures": {**entry.get("figures", {}), **figures},
                          "hardware": runner.hardware(),
                          "command": "make bench ARGS=sensors" + ("" if done == len(ARCHIVE) else
                                                                  f" (archive: {done} of {len(ARCHIVE)} datasets "
                                                                  "so far)"),
                          "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    workspace.write_json(runner.RESULTS, results)


def run() -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    figures = run_archive(checkpoint=_checkpoint)
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
