"""Training shared by the train and tune stages: data from the split, a compiled model, fit, val metrics."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import tensorflow as tf
import tf_keras as keras

import models
from pipelines import config as config_module
from pipelines import workspace

OPTIMIZERS = {
    "adam": lambda rate: keras.optimizers.Adam(rate),
    "sgd": lambda rate: keras.optimizers.SGD(rate, momentum=0.9, nesterov=True),
    "rmsprop": lambda rate: keras.optimizers.RMSprop(rate),
    "adagrad": lambda rate: keras.optimizers.Adagrad(rate),
}


@dataclasses.dataclass
class SplitData:
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    dataset: dict  # kind, task, class_names, input_shape (and feature_names for tables)
    normalizer: dict

    @property
    def task(self) -> str:
        return self.dataset["task"]

    @property
    def class_names(self) -> list[str]:
        return self.dataset["class_names"]

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) if self.task == "classification" else 1


def load_split(folder: Path, splits: tuple[str, ...] = ("train", "val")) -> SplitData:
    """Training-side splits only by default: nothing before evaluate reads the test split."""
    x, y = {}, {}
    for name in splits:
        x[name], y[name] = workspace.load_arrays(folder, name, "x", "y")
    return SplitData(x, y, workspace.read_json(folder / "dataset.json"),
                     workspace.read_json(folder / "normalizer.json"))


def objective(task: str) -> tuple[str, bool]:
    """The validation metric that ranks models, and whether higher is better."""
    return ("val/accuracy", True) if task == "classification" else ("val/mae", False)


def better(candidate: dict, incumbent: dict, task: str) -> bool:
    """Ranks by the task's objective; ties go to the lower validation loss."""
    key, higher = objective(task)
    sign = 1.0 if higher else -1.0
    return (sign * candidate[key], -candidate["val/loss"]) > (sign * incumbent[key], -incumbent["val/loss"])


def strategy(runtime: config_module.RuntimeConfig) -> tf.distribute.Strategy:
    if runtime.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs Keras epoch logs to the active MLflow run under namespaced keys (`train/loss`, `val/accuracy`)."""

    def on_epoch_end(self, epoch, logs=None):
        metrics = {}
        for key, value in (logs or {}).items():
            name = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
            metrics[name] = float(value)
        mlflow.log_metrics(metrics, step=epoch)


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y))
    if seed is not None:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def fit(config: config_module.Config, data: SplitData, epochs: int, log_to_mlflow: bool = True):
    """Builds, compiles and fits the configured model with early stopping on val_loss.

    Returns:
        (model, history dict, {"val/accuracy" or "val/mae", "val/loss", "epochs", "fit_seconds"}).
    """
    keras.utils.set_random_seed(config.train.seed)
    build = models.architectures()[config.model.architecture]
    classification = data.task == "classification"
    with strategy(config.runtime).scope():
        model = build(config.model, data.x["train"].shape[1:], data.num_outputs, data.normalizer, data.task)
        model.compile(optimizer=OPTIMIZERS[config.train.optimizer](config.train.learning_rate),
                      loss="sparse_categorical_crossentropy" if classification else "mse",
                      metrics=["accuracy" if classification else "mae"])
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.train.patience,
                                               restore_best_weights=True)]
    if log_to_mlflow:
        callbacks.append(MlflowEpochLogger())
    started = time.perf_counter()
    history = model.fit(_dataset(data.x["train"], data.y["train"], config.train.batch_size, config.train.seed),
                        validation_data=_dataset(data.x["val"], data.y["val"], 256, None),
                        epochs=epochs, callbacks=callbacks, verbose=config.runtime.verbose)
    seconds = time.perf_counter() - started
    loss, score = model.evaluate(_dataset(data.x["val"], data.y["val"], 256, None), verbose=0)
    return model, history.history, {objective(data.task)[0]: float(score), "val/loss": float(loss),
                                    "epochs": len(history.history["loss"]), "fit_seconds": seconds}


def plot_learning_curves(history: dict, path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    second = "accuracy" if "accuracy" in history else "mae"
    for axis, metric in zip(axes, ("loss", second)):
        axis.plot(history[metric], label=f"train {metric}")
        axis.plot(history[f"val_{metric}"], label=f"val {metric}")
        axis.set(xlabel="epoch", title=metric)
        axis.legend()
    figure.tight_layout()
    with workspace.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


PIP_REQUIREMENTS = ["tensorflow==2.21.0", "tf-keras==2.21.0"]


def log_keras_model(model: keras.Model) -> str:
    """Logs the model to the active run with MLflow's TensorFlow flavor; returns its URI."""
    info = mlflow.tensorflow.log_model(model, name="model", pip_requirements=PIP_REQUIREMENTS)
    return info.model_uri
