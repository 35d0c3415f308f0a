"""train: fit the configured model on the training split, early-stopped on validation, and register it.

Architectures: a small CNN, a ResNet, an MLP for tables, or `transfer` (a pretrained backbone and a head, see
pipelines/transfer.py). The model is logged with MLflow's TensorFlow flavor, registered under the
experiment's name and marked `champion` (tune moves the alias if it finds a better model). A killed run
resumes from its last completed epoch (Keras BackupAndRestore in a folder that survives the kill).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
from sklearn import metrics as sk_metrics

from pipelines import augment, fitting, stage, tracking, transfer, workspace
from pipelines import config as config_module

SECTIONS = ("data", "model", "train", "transfer", "augment", "runtime.strategy")


def _val_confusion(model, data: fitting.SplitData, path: Path) -> None:
    predicted = model.predict(data.x["val"].astype(np.float32), verbose=0).argmax(axis=1)
    figure, axis = plt.subplots(figsize=(5.5, 5))
    sk_metrics.ConfusionMatrixDisplay.from_predictions(data.y["val"], predicted, display_labels=data.class_names,
                                                       ax=axis, colorbar=False)
    axis.set_title("Validation confusion matrix")
    figure.tight_layout()
    with workspace.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


def _summary(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lines.append, expand_nested=True)
    return "\n".join(lines) + "\n"


def fit_model(config: config_module.Config, data: fitting.SplitData, split_digest: str, folder: Path | None = None,
              backup: Path | None = None, log_to_mlflow: bool = True, callbacks: list | None = None):
    """Trains the configured architecture, transfer included; returns (model, history, scores)."""
    if config.model.architecture == "transfer":
        return transfer.train(config, data, folder, backup, split_digest, log_to_mlflow, callbacks)
    return fitting.fit(config, data, config.train.epochs, folder=folder, backup_dir=backup,
                       log_to_mlflow=log_to_mlflow, callbacks=callbacks)


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Trains on train, early-stops on val, logs curves, confusion matrix and summary, registers the model."""
    split_folder, _ = stage.upstream(config, "split", "train")
    inputs = {"split": stage.manifest_digest(split_folder)}
    if config.model.architecture == "transfer":
        inputs["pretrain"] = stage.manifest_digest(stage.upstream(config, "pretrain", "train")[0])
    backup = stage.backup_dir(config, "train", stage.fingerprint(config, "train", SECTIONS, inputs))

    def body(folder: Path) -> dict:
        data = fitting.load_split(split_folder)
        mlflow.set_tag("augmentation", augment.describe(config.augment))
        model, history, scores = fit_model(config, data, inputs["split"], folder, backup)
        fitting.plot_learning_curves(history, folder / "learning_curves.png")
        workspace.write_text(folder / "model_summary.txt", _summary(model))
        if data.task == "classification":
            _val_confusion(model, data, folder / "val_confusion.png")
        for name in ("learning_curves.png", "model_summary.txt", "val_confusion.png"):
            if (folder / name).is_file():
                mlflow.log_artifact(str(folder / name))
        version = tracking.register(config, fitting.log_keras_model(model), make_champion=True)
        key = fitting.objective(data.task)[0]
        metrics = {key: scores[key], "val/loss": scores["val/loss"], "train/epochs_run": scores["epochs"],
                   "train/fit_seconds": scores["fit_seconds"], "model/params": model.count_params()}
        metrics.update({name: value for name, value in scores.items() if name.startswith("phase1/")})
        tracking.log_metrics(metrics)
        workspace.write_json(folder / "model.json", {"registered_model": config.experiment, "version": version,
                                                     "params": model.count_params()})
        shutil.rmtree(backup, ignore_errors=True)  # finished: the next run starts afresh
        return {**metrics, "model_version": version}

    return stage.execute(
        config, "train", SECTIONS, inputs, body, force,
        still_valid=lambda manifest: tracking.version_exists(config, manifest["metrics"]["model_version"]))


