"""Fitting a Keras model on the split: the objective, optimizers, losses, callbacks, fit with early stopping."""

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
from pipelines.core import config as config_module
from pipelines.core import figures
from pipelines.core.errors import ConfigError
from pipelines.data import augment as augmentation
from pipelines.data.splits import SplitData
from pipelines.training import anomaly, objectives

OPTIMIZERS = {
    "adam": lambda rate: keras.optimizers.Adam(rate),
    "sgd": lambda rate: keras.optimizers.SGD(rate, momentum=0.9, nesterov=True),
    "rmsprop": lambda rate: keras.optimizers.RMSprop(rate),
    "adagrad": lambda rate: keras.optimizers.Adagrad(rate),
}


@dataclasses.dataclass(frozen=True)
class Objective:
    """The validation metric that ranks models (accuracy, or MAE for regression), under its two spellings:
    `key` in scores and MLflow (`val/accuracy`), `log_name` in Keras logs and tables (`val_accuracy`)."""

    metric: str
    higher: bool
    named: bool = False  # `train.objective` named it: early stopping watches it too, not val_loss
    threshold: str = "argmax"  # binary: "tuned" chooses the decision threshold on validation
    floors: tuple = ()  # ((metric, floor), ...) the tuned threshold must meet
    positive_class: str = ""

    @property
    def key(self) -> str:
        return f"val/{self.metric}"

    @property
    def log_name(self) -> str:
        return f"val_{self.metric}"

    def worst(self) -> float:
        return 0.0 if self.higher else float("inf")

    def better(self, candidate: dict, incumbent: dict) -> bool:
        """Whether `candidate` scores beat `incumbent`'s; ties go to the lower validation loss."""
        sign = 1.0 if self.higher else -1.0
        return (sign * candidate[self.key], -candidate["val/loss"]) > (sign * incumbent[self.key],
                                                                       -incumbent["val/loss"])


def objective(task: str, train: config_module.TrainConfig | None = None) -> Objective:
    """The validation metric that ranks models of a task: `train.objective` when named, else accuracy or MAE
    (an anomaly detector: the mean absolute error of its reconstructions of normal validation windows).

    Raises:
        ConfigError: the named objective is not one of the task's.
    """
    if train is None or train.objective == "auto":
        return Objective("accuracy", True) if task == "classification" else Objective("mae", False)
    kind, higher = objectives.OBJECTIVES[train.objective]
    if kind != task:
        raise ConfigError(f"train.objective: '{train.objective}' is a {kind} metric; this is a {task} task "
                          f"(choose from {[name for name, (k, _) in objectives.OBJECTIVES.items() if k == task]} "
                          "or auto)")
    return Objective(train.objective, higher, True, train.threshold, tuple(sorted(train.floors.items())),
                     train.positive_class)


def score_objective(goal: Objective, y: np.ndarray, outputs: np.ndarray, class_names: list[str]) -> dict:
    """A named objective on validation outputs: {key: value}, and for a binary classifier with a tuned threshold
    `val/threshold` and whether the floors were met (`val/floors_met`, 1 or 0)."""
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        outputs = outputs[:, 0]
    positive = objectives.positive_index(class_names, goal.positive_class) if class_names else 1
    if goal.threshold == "tuned" and outputs.ndim == 2 and outputs.shape[1] == 2:
        chosen = objectives.choose_threshold(y, outputs, goal.metric, dict(goal.floors), positive)
        value = chosen["objective"] if chosen["met"] else goal.worst()
        return {goal.key: value, "val/threshold": chosen["threshold"], "val/floors_met": float(chosen["met"])}
    return {goal.key: objectives.score(goal.metric, y, outputs, None, positive)}


class ObjectiveLogger(keras.callbacks.Callback):
    """Scores a named objective on the validation split after each epoch and puts it into the epoch's logs
    (`val_<metric>`, and `val_threshold`), so early stopping, the checkpoint, the search's pruner, the history
    and MLflow all see it. Comes before them in the callback list. What early stopping watches is `val_selection`:
    the objective (negated when lower is better), ties broken by the validation loss, as the champion rule breaks
    them (a saturated objective, recall 1.0 from the third epoch say, must not stop a model that still learns)."""

    TIE_BREAK = 1e-6  # the weight of val_loss: below any step of a metric over fewer than a million items

    def __init__(self, goal: Objective, val: tf.data.Dataset, y: np.ndarray, class_names: list[str]):
        super().__init__()
        self.goal, self.val, self.y, self.class_names = goal, val, y, class_names

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        found = score_objective(self.goal, self.y, self.model.predict(self.val, verbose=0), self.class_names)
        logs.update({key.replace("val/", "val_"): value for key, value in found.items()})
        value = found[self.goal.key] if self.goal.higher else -found[self.goal.key]
        logs["val_selection"] = value - self.TIE_BREAK * float(logs.get("val_loss", 0.0))


_MULTI_WORKER: list = []  # TensorFlow allows one MultiWorkerMirroredStrategy per process, made before other ops


def strategy(runtime: config_module.RuntimeConfig) -> tf.distribute.Strategy:
    """The configured `tf.distribute` strategy. `multi_worker` reads the cluster from TF_CONFIG; the CLI
    creates it at start-up (collective ops must be configured before TensorFlow runs anything else)."""
    if runtime.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if runtime.strategy == "multi_worker":
        if not _MULTI_WORKER:
            _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
        return _MULTI_WORKER[0]
    return tf.distribute.get_strategy()


def learning_rates(model: keras.Model) -> dict[str, float]:
    """The current learning rate of each of a model's optimizers: {"learning_rate": ...} for a model compiled
    the usual way, {"d_learning_rate": ..., "g_learning_rate": ...} for a custom one with `*_optimizer`s."""
    found = {name.removesuffix("_optimizer") + "_": value for name, value in vars(model).items()
             if name.endswith("_optimizer") and isinstance(value, keras.optimizers.Optimizer)}
    if not found and getattr(model, "optimizer", None) is not None:
        found = {"": model.optimizer}
    rates = {}
    for name, optimizer in found.items():
        rate = optimizer.learning_rate
        rate = rate(optimizer.iterations) if callable(rate) else rate
        rates[f"{name}learning_rate"] = float(keras.backend.get_value(rate))
    return rates


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs Keras epoch logs to the active MLflow run under namespaced keys (`train/loss`, `val/accuracy`), and
    the learning rate each epoch trained with (`train/learning_rate`, whether or not ReduceLROnPlateau is on);
    `offset` continues the step count across training phases; `prefix` keeps two models' curves apart."""

    def __init__(self, offset: int = 0, prefix: str = ""):
        super().__init__()
        self.offset, self.prefix = offset, prefix
        self.rates: dict[str, float] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.rates = learning_rates(self.model)  # before ReduceLROnPlateau may lower it at this epoch's end

    def on_epoch_end(self, epoch, logs=None):
        metrics = {}
        for key, value in (logs or {}).items():
            if key == "lr":  # ReduceLROnPlateau's copy of the rate it set for the next epoch
                continue
            name = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
            metrics[self.prefix + name] = float(value)
        metrics.update({f"{self.prefix}train/{name}": value for name, value in self.rates.items()})
        mlflow.log_metrics(metrics, step=epoch + self.offset)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite batch loss (`loss`, or any of a custom train_step's losses, such
    as a GAN's d_loss and g_loss) and remembers where it happened."""

    def __init__(self):
        super().__init__()
        self.epoch, self.where = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        losses = {key: value for key, value in (logs or {}).items() if "loss" in key}
        bad = next(((key, value) for key, value in losses.items() if not np.isfinite(value)), None)
        if bad is not None:
            self.where = (self.epoch + 1, batch + 1, float(bad[1]), bad[0])
            self.model.stop_training = True


def loss_for(config: config_module.Config, task: str) -> str:
    """The configured loss, checked against the task."""
    name = config.train.loss
    if name == "auto":
        return "sparse_categorical_crossentropy" if task == "classification" else "mse"
    allowed = LOSSES_FOR[task]
    if name not in allowed:
        raise ConfigError(f"train.loss: '{name}' does not fit a {task} task (choose from {list(allowed)})")
    return name


LOSSES_FOR = {"classification": ("sparse_categorical_crossentropy", "categorical_crossentropy",
                                 "binary_crossentropy"),
              "regression": ("mse", "mae", "mape"), "anomaly": ("mse", "mae")}


def training_view(data: SplitData) -> SplitData:
    """What a model of the data's task trains on: the split itself, or for anomaly detection the normal
    windows, each its own target (pipelines/training/anomaly.py)."""
    return anomaly.training_view(data) if data.task == "anomaly" else data


def check_task(config: config_module.Config, task: str) -> None:
    """An anomaly-detection source needs the autoencoder, and the autoencoder an anomaly-detection source.

    Raises:
        ConfigError: naming model.architecture and the task.
    """
    if (task == "anomaly") != (config.model.architecture == "autoencoder1d"):
        wanted = "autoencoder1d" if task == "anomaly" else "cnn1d or recurrent"
        raise ConfigError(f"model.architecture: '{config.model.architecture}' does not fit the {task} task of "
                          f"data.source '{config.data.source}' (use {wanted})")


def compile_model(model: keras.Model, config: config_module.Config, task: str, learning_rate: float) -> None:
    model.compile(optimizer=OPTIMIZERS[config.train.optimizer](learning_rate), loss=loss_for(config, task),
                  metrics=["accuracy" if task == "classification" else "mae"])


def labels(y: np.ndarray, loss: str, classes: int) -> np.ndarray:
    """One-hot labels for the losses that need them."""
    if loss in ("categorical_crossentropy", "binary_crossentropy"):
        return np.eye(classes, dtype=np.float32)[y]
    return y


def class_weights(config: config_module.Config, data: SplitData) -> dict | None:
    if config.train.class_weights == "none" or data.task != "classification":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.arange(data.num_outputs)
    present = np.unique(data.y["train"])
    weights = compute_class_weight("balanced", classes=present, y=data.y["train"])
    return {int(label): float(weight) for label, weight in zip(present, weights)} | {
        int(label): 1.0 for label in classes if label not in present}


def _learning_rates(model: keras.Model) -> str:
    """'learning rate 0.001', or each of a custom model's optimizers (a GAN's d_optimizer and g_optimizer)."""
    rates = [f"{name.removesuffix('_learning_rate') + ' ' if name != 'learning_rate' else ''}learning rate {value:g}"
             for name, value in learning_rates(model).items()]
    return ", ".join(rates) or "no optimizer"


def guarded_fit(model: keras.Model, x, y=None, *, epochs: int, validation_data=None, patience: int | None = None,
                reduce_lr_patience: int = 0, reduce_lr_factor: float = 0.5, min_lr: float = 0.0,
                monitor: str = "val_loss", mode: str = "min",
                checkpoint: Path | None = None, backup_dir: Path | None = None, log: bool = True, offset: int = 0,
                prefix: str = "", verbose: int = 0, scorers: list | tuple = (), callbacks: list | tuple = (),
                **options) -> dict:
    """The one fit path of every model: `model.fit` with the NaN guard, early stopping on `monitor` unless
    `patience` is None (best weights restored), ReduceLROnPlateau (times `reduce_lr_factor`, never below `min_lr`)
    when `reduce_lr_patience`, the best
    weights checkpointed to `checkpoint`, resume of a killed run from `backup_dir` (BackupAndRestore, epoch
    granularity) and MLflow epoch logging under `prefix`. `options` go to `fit` as they are (batch_size,
    steps_per_epoch, class_weight); `scorers` run before the standard callbacks (they write the logs those
    watch), `callbacks` after them. Returns the history dict.

    Raises:
        TrainingDiverged: the loss became NaN or infinite; the message says at which epoch and batch.
    """
    guard = NanGuard()
    standard = [guard, *scorers]
    if patience is not None:
        standard.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience,
                                                      restore_best_weights=True))
    if reduce_lr_patience:
        standard.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=reduce_lr_factor,
                                                          patience=reduce_lr_patience, min_lr=min_lr))
    if checkpoint is not None:
        standard.append(keras.callbacks.ModelCheckpoint(str(checkpoint), monitor=monitor, mode=mode,
                                                        save_best_only=True, save_weights_only=True))
    if backup_dir is not None:  # a killed run resumes from its last completed epoch
        if backup_dir.is_dir() and any(backup_dir.iterdir()):
            print(f"[{prefix.rstrip('/') or 'train'}] resuming from the backup of an interrupted run in {backup_dir}")
        standard.append(keras.callbacks.BackupAndRestore(str(backup_dir)))
    if log:
        standard.append(MlflowEpochLogger(offset, prefix))
    standard += list(callbacks)
    history = model.fit(x, y, validation_data=validation_data, epochs=epochs, callbacks=standard, verbose=verbose,
                        **options)
    if guard.where:
        epoch, batch, value, name = guard.where
        what = "the loss" if name == "loss" else f"the loss {name}"
        raise TrainingDiverged(f"training stopped: {what} became {value} at epoch {epoch}, batch {batch} "
                               f"({_learning_rates(model)}); lower the learning rate, or look for NaN or inf in the "
                               "inputs")
    return history.history


def fit_compiled(model: keras.Model, config: config_module.Config, data: SplitData, epochs: int, *,
                 augment: bool = True, folder: Path | None = None, backup_dir: Path | None = None,
                 offset: int = 0, log_to_mlflow: bool = True, callbacks: list | None = None) -> tuple[dict, dict]:
    """Fits a compiled model on train with early stopping on val; returns (history, validation scores).

    Raises:
        TrainingDiverged: the loss became NaN or infinite; the message says at which epoch and batch.
    """
    check_task(config, data.task)
    data = training_view(data)
    loss = loss_for(config, data.task)
    y_train = labels(data.y["train"], loss, data.num_outputs)
    y_val = labels(data.y["val"], loss, data.num_outputs)
    compose = augmentation.build(config.augment) if augment else None
    train = _distributed(augmentation.dataset(data.x["train"], y_train, config.train.batch_size,
                                              config.train.seed, compose), data.x["train"])
    val = _distributed(augmentation.batches(data.x["val"], y_val, 256), None)
    steps = config.train.steps_per_epoch or None
    if not steps and config.runtime.strategy == "multi_worker" and data.x["train"].by_file:
        # each worker reads its own shards, which hold different numbers of the split's items: a fixed step
        # count over a repeated stream keeps the workers in step
        steps = -(-len(data.x["train"]) // config.train.batch_size)
    if steps:
        train = train.repeat()
    goal = objective(data.task, config.train)
    class_names = data.class_names if data.task == "classification" else []
    scorer = ObjectiveLogger(goal, val, data.y["val"], class_names) if goal.named else None
    # a named objective is watched itself; otherwise the smooth validation loss; or the training loss
    monitor, mode = ("val_selection", "max") if scorer is not None else ("val_loss", "min")
    if config.train.monitor == "train":
        monitor, mode = "loss", "min"
    started = time.perf_counter()
    history = guarded_fit(
        model, train, epochs=epochs, validation_data=val, patience=config.train.patience,
        reduce_lr_patience=config.train.reduce_lr_patience, reduce_lr_factor=config.train.reduce_lr_factor,
        min_lr=config.train.min_learning_rate, monitor=monitor, mode=mode,
        checkpoint=folder / "best.weights.h5" if folder is not None and config.train.checkpoint else None,
        backup_dir=backup_dir, log=log_to_mlflow, offset=offset, verbose=config.runtime.verbose,
        scorers=[scorer] if scorer is not None else [], callbacks=callbacks or [], steps_per_epoch=steps,
        class_weight=class_weights(config, data))
    seconds = time.perf_counter() - started
    val_loss, score = model.evaluate(val, verbose=0)
    scores = {objective(data.task).key: float(score), "val/loss": float(val_loss),
              "epochs": len(history["loss"]), "fit_seconds": seconds}
    if goal.named:
        scores.update(score_objective(goal, data.y["val"], model.predict(val, verbose=0), class_names))
    return history, scores


def bias_variance(model: keras.Model, config: config_module.Config, data: SplitData, scores: dict) -> dict:
    """Whether a trained model under-fits, over-fits or is fine, from its score on the training split (no
    augmentation, inference mode) against its validation score in `scores`, on the project's objective:

    - accuracy-like metrics (higher is better, at most 1): the shortfall is 1 - train score, the gap train - val;
    - errors (MAE, RMSE, MAPE): both are shares of a constant predictor's error on the training split (the
      training targets' median): the shortfall is train error / that, the gap (val - train error) / that.
    Under-fitting when the shortfall exceeds `train.underfit_shortfall` (checked first: bias before variance),
    over-fitting when the gap exceeds `train.overfit_gap`, else fine. An anomaly detector gets no verdict ({}).
    """
    if data.task == "anomaly":
        return {}
    goal = objective(data.task, config.train)
    loss = loss_for(config, data.task)
    y_train = data.y["train"]
    outputs = model.predict(augmentation.batches(data.x["train"], labels(y_train, loss, data.num_outputs), 256),
                            verbose=0)
    class_names = data.class_names if data.task == "classification" else []
    train = score_objective(goal, y_train, outputs, class_names)[goal.key]
    val = scores[goal.key]
    found = {"metric": goal.metric, "train": float(train), "val": float(val)}
    if goal.higher:
        shortfall, gap, scale = 1.0 - train, train - val, ""
    else:
        constant = objectives.score(goal.metric, y_train, np.full(len(y_train), np.median(y_train)))
        shortfall, gap = train / max(constant, 1e-12), (val - train) / max(constant, 1e-12)
        scale = f" (as shares of a constant predictor's {goal.metric} {constant:.4g})"
        found["constant"] = float(constant)
    settings = config.train
    verdict = ("under-fitting" if shortfall > settings.underfit_shortfall else
               "over-fitting" if gap > settings.overfit_gap else "fine")
    found.update(shortfall=float(shortfall), gap=float(gap), verdict=verdict, line=(
        f"{verdict}: train {goal.metric} {train:.4f}, val {goal.metric} {val:.4f}; shortfall {shortfall:.3f} "
        f"(train.underfit_shortfall {settings.underfit_shortfall:g}), gap {gap:.3f} (train.overfit_gap "
        f"{settings.overfit_gap:g}){scale}"))
    return found


def fit_inputs(x, y: np.ndarray, loss: str, num_outputs: int, batch_size: int, seed: int):
    """(x, y) for a plain `model.fit(x, y)` (the fine-tunes of pruning and quantization-aware training) from a
    split's reader: an array in memory as it is; items in files as a seeded stream of batches (with y None),
    never loaded whole."""
    if not x.by_file:
        return x.array(), y
    stream = augmentation.batches(x, labels(y, loss, num_outputs), batch_size, seed)
    return stream.apply(tf.data.experimental.assert_cardinality(-(-len(x) // batch_size))), None


def _distributed(data: tf.data.Dataset, x) -> tf.data.Dataset:
    """Under a multi-worker strategy each worker reads its own part: training images in shards by file
    (TensorFlow falls back to every n-th batch when there are fewer files than workers); arrays in memory,
    which have no files, and validation (`x` None: every worker must run the same number of steps) by every
    n-th batch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.AUTO if x is not None and x.by_file
        else tf.data.experimental.AutoShardPolicy.DATA)
    return data.with_options(options)


def fit(config: config_module.Config, data: SplitData, epochs: int, log_to_mlflow: bool = True,
        folder: Path | None = None, backup_dir: Path | None = None, callbacks: list | None = None):
    """Builds, compiles and fits the configured architecture (not `transfer`, see training.transfer).

    Returns:
        (model, history dict, {"val/accuracy" or "val/mae", "val/loss", "epochs", "fit_seconds"}).
    """
    keras.utils.set_random_seed(config.train.seed)
    build = models.architectures()[config.model.architecture]
    with strategy(config.runtime).scope():
        model = build(config.model, data.x["train"].shape[1:], data.num_outputs, data.normalizer, data.task)
        compile_model(model, config, data.task, config.train.learning_rate)
    history, scores = fit_compiled(model, config, data, epochs, folder=folder, backup_dir=backup_dir,
                                   log_to_mlflow=log_to_mlflow, callbacks=callbacks)
    return model, history, scores


def plot_learning_curves(history: dict, path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    second = "accuracy" if "accuracy" in history else "mae"
    for axis, metric in zip(axes, ("loss", second)):
        axis.plot(history[metric], label=f"train {metric}")
        axis.plot(history[f"val_{metric}"], label=f"val {metric}")
        axis.set(xlabel="epoch", title=metric)
        axis.legend()
    figures.save(figure, path)
