"""train: fit the configured model on the training split, early-stopped on validation, and register it.

Architectures: a small CNN, a ResNet, an MLP for tables, or `transfer` (a pretrained backbone and a head, see
pipelines/training/transfer.py). The model is logged with MLflow's TensorFlow flavor and registered under the
experiment's name; it becomes `champion` by the one rule of pipelines/training/champion.py (a better
validation score on the same split, or any model on a new split). A killed run resumes from its last
completed epoch (Keras BackupAndRestore in a folder that survives the kill). The bias-variance verdict
(fitting.bias_variance: under-fitting, over-fitting or fine, with the train and validation scores) is printed,
tagged in MLflow and written to train_report.json.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
from sklearn import metrics as sk_metrics

from pipelines.core import config as config_module
from pipelines.core import figures, stage, tracking, workspace
from pipelines.data import augment, splits
from pipelines.training import champion, fitting, recipes


def _val_confusion(model, data: splits.SplitData, path: Path) -> None:
    predicted = splits.predict({"keras": model}, data.x["val"])["keras"].argmax(axis=1)
    figure, axis = plt.subplots(figsize=(5.5, 5))
    sk_metrics.ConfusionMatrixDisplay.from_predictions(data.y["val"], predicted, display_labels=data.class_names,
                                                       ax=axis, colorbar=False)
    axis.set_title("Validation confusion matrix")
    figures.save(figure, path)


def _summary(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lines.append, expand_nested=True)
    return "\n".join(lines) + "\n"


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Trains on train, early-stops on val, logs curves, confusion matrix and summary, registers the model."""
    split_folder, _ = stage.upstream(config, "split", "train")
    split_id = splits.identity(split_folder)
    inputs = {"split": stage.identity(split_folder)}
    if config.model.architecture == "transfer":
        inputs["pretrain"] = stage.identity(stage.upstream(config, "pretrain", "train")[0])
    backup = stage.backup_dir(config, "train", stage.fingerprint(config, "train", recipes.SECTIONS, inputs))

    def body(folder: Path) -> dict:
        data = splits.load_split(split_folder, in_memory_mb=config.runtime.in_memory_mb)
        mlflow.set_tag("augmentation", augment.describe(config.augment))
        model, history, scores = recipes.fit_model(config, data, split_id, folder, backup)
        diagnosis = fitting.bias_variance(model, config, data, scores)
        if diagnosis:
            print(f"[train] bias-variance: {diagnosis['line']}")
            mlflow.set_tags({"bias_variance": diagnosis["verdict"], "bias_variance.line": diagnosis["line"]})
            workspace.write_json(folder / "train_report.json", {"bias_variance": diagnosis})
        fitting.plot_learning_curves(history, folder / "learning_curves.png")
        workspace.write_text(folder / "model_summary.txt", _summary(model))
        if data.task == "classification":
            _val_confusion(model, data, folder / "val_confusion.png")
        for name in ("learning_curves.png", "model_summary.txt", "val_confusion.png", "train_report.json"):
            if (folder / name).is_file():
                mlflow.log_artifact(str(folder / name))
        version, promoted = champion.register(config, model, scores, split_id, data.task, data.x["val"].head(2))
        key = fitting.objective(data.task, config.train).key
        metrics = {key: scores[key], "val/loss": scores["val/loss"], "train/epochs_run": scores["epochs"],
                   **{name: scores[name] for name in ("val/threshold", "val/floors_met") if name in scores},
                   "train/fit_seconds": scores["fit_seconds"], "model/params": model.count_params(),
                   "train/replicas": model.distribute_strategy.num_replicas_in_sync}
        metrics.update({name: value for name, value in scores.items() if name.startswith("phase1/")})
        if diagnosis:  # the bias-variance numbers beside the verdict tag
            metrics.update({f"fit/train_{diagnosis['metric']}": diagnosis["train"],
                            "fit/shortfall": diagnosis["shortfall"], "fit/gap": diagnosis["gap"]})
        tracking.log_metrics(metrics, step=len(history["loss"]))  # after the last epoch: what the UI shows
        workspace.write_json(folder / "model.json", {"registered_model": config.experiment, "version": version,
                                                     "params": model.count_params()})
        shutil.rmtree(backup, ignore_errors=True)  # finished: the next run starts afresh
        return {**metrics, "model_version": version, "champion": promoted}

    return stage.execute(
        config, "train", recipes.SECTIONS, inputs, body, force,
        still_valid=lambda manifest: tracking.version_exists(config, manifest["metrics"]["model_version"]))


