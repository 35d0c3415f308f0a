"""train: fit the configured model on the training split, early-stopped on validation, and register it.

The trained model is logged with MLflow's TensorFlow flavor, registered under the experiment's name and
marked `champion` (tune moves the alias if it finds a better model).
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from pipelines import config as config_module
from pipelines import fitting, stage, tracking, workspace


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Trains on train, early-stops on val, logs curves and the model, registers it as champion."""
    split_folder, _ = stage.upstream(config, "split", "train")

    def body(folder: Path) -> dict:
        data = fitting.load_split(split_folder)
        model, history, scores = fitting.fit(config, data, config.train.epochs)
        fitting.plot_learning_curves(history, folder / "learning_curves.png")
        mlflow.log_artifact(str(folder / "learning_curves.png"))
        version = tracking.register(config, fitting.log_keras_model(model), make_champion=True)
        key = fitting.objective(data.task)[0]
        metrics = {key: scores[key], "val/loss": scores["val/loss"],
                   "train/epochs_run": scores["epochs"], "train/fit_seconds": scores["fit_seconds"]}
        tracking.log_metrics(metrics)
        workspace.write_json(folder / "model.json", {"registered_model": config.experiment, "version": version,
                                                     "params": model.count_params()})
        return {**metrics, "model_version": version}

    return stage.execute(
        config, "train", ("data", "model", "train", "runtime.strategy"),
        {"split": stage.manifest_digest(split_folder)}, body, force,
        still_valid=lambda manifest: tracking.version_exists(config, manifest["metrics"]["model_version"]))
