"""Transfer learning for the train stage: feature extraction (cached features, or the frozen backbone inside
the model) and fine-tuning, Keras's two-phase recipe.

- feature_cache: run the frozen backbone once over train and val, cache the features (versioned by backbone and
  data), train the head on the cache. Each image is seen as its one cached vector, so augmentation is impossible
  this way; the log says so.
- frozen: the backbone inside the model, called with training=False, plus the head; augmentation works.
- fine_tune: `frozen`, then a second phase that unfreezes the top `transfer.fine_tune_layers` layers with weights
  of any backbone (keras.applications, TF-Hub, the project's own: models/backbones.py `unfreeze`) and recompiles
  with the learning rate times `transfer.fine_tune_lr_factor` (10 to 100 times smaller). Batch norm stays frozen
  and in inference mode, because the backbone is always called with training=False (keras-io's guide).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import tensorflow as tf
import tf_keras as keras

from models import backbones, transfer
from pipelines.core import config as config_module
from pipelines.core import stage, workspace
from pipelines.core.errors import ConfigError, StageError
from pipelines.data import augment, readers, splits
from pipelines.data.splits import SplitData
from pipelines.training import fitting

BACKBONE_RECORD = "backbone.json"  # what the pretrain stage writes: {"needed", "kind", "path", "feature_dim"}


def project_backbone(config: config_module.Config) -> Path | None:
    """The SavedModel folder of the project's own backbone, as the finished pretrain stage recorded it
    (None when the config uses no project backbone).

    Raises:
        StageError: the config needs a project backbone and pretrain has not made it.
    """
    if not config.model.uses_project_backbone:
        return None
    folder, _ = stage.upstream(config, "pretrain", "train")
    record = workspace.read_json(folder / BACKBONE_RECORD)
    path = Path(record.get("path", ""))
    if not record.get("needed") or not path.is_dir():
        raise StageError(f"{folder / BACKBONE_RECORD}: no project backbone at {path}; rerun 'pretrain --force'")
    return path


def backbone_identity(config: config_module.Config) -> str:
    """What the backbone is, for versioning the feature cache."""
    settings = config.model.backbone
    if config.model.uses_project_backbone:
        return f"{settings.kind}:{project_backbone(config)}"
    return f"{settings.kind}:{settings.handle or settings.application}:{settings.weights}"


def cached_features(config: config_module.Config, backbone, data: SplitData, split_digest: str) -> dict:
    """{split: features}, computed once per backbone and data version, then read from the cache."""
    # a cross-validation fold is a view of its own (fold_views names it), with features of its own
    key = workspace.fingerprint({"backbone": backbone_identity(config), "split": split_digest,
                                 "view": data.dataset.get("view", "split")})[:16]
    folder = workspace.stage_dir(config.root, config.experiment, "feature_cache") / key
    if not (folder / "val_features.npy").is_file():
        with workspace.staging(folder) as staged:
            for name in ("train", "val"):  # streamed through the backbone a batch at a time
                features = splits.predict({"backbone": _Batched(backbone)}, data.x[name])["backbone"]
                workspace.save_arrays(staged, name, features=features)
        print(f"[train] cached backbone features in {folder}")
    else:
        print(f"[train] backbone features read from the cache {folder}")
    return {name: workspace.load_arrays(folder, name, "features")[0] for name in ("train", "val")}


class _Batched:
    """A backbone layer called like a Keras model's `predict_on_batch` (inference mode)."""

    def __init__(self, backbone):
        self.backbone = backbone

    def predict_on_batch(self, items: np.ndarray) -> np.ndarray:
        return self.backbone(tf.constant(items, tf.float32), training=False).numpy()


def load_backbone(config: config_module.Config, input_shape: tuple[int, ...]):
    """The configured backbone as a frozen Keras layer.

    Raises:
        ConfigError: the architecture, weights file or SavedModel the config names cannot be used.
    """
    try:
        return backbones.load(config.model.backbone, input_shape, config.root, project_backbone(config))
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from None


def train(config: config_module.Config, data: SplitData, folder: Path | None, backup_root: Path | None,
          split_digest: str, log_to_mlflow: bool = True,
          callbacks: list | None = None) -> tuple[keras.Model, dict, dict]:
    """Trains the head (and, for fine_tune, the top of the backbone); returns (model, history, scores)."""
    settings = config.transfer
    keras.utils.set_random_seed(config.train.seed)
    input_shape = data.x["train"].shape[1:]
    with fitting.strategy(config.runtime).scope():
        backbone = load_backbone(config, input_shape)
        feature_dim = int(backbone(tf.zeros((1, *input_shape)), training=False).shape[-1])
        head = transfer.build_head(config.model, feature_dim, data.num_outputs, data.task)
        model = transfer.build_transfer(backbone, head, input_shape)
    if log_to_mlflow:
        mlflow.set_tags({"transfer.method": settings.method, "transfer.backbone": backbone_identity(config)})
    options = {"folder": folder, "log_to_mlflow": log_to_mlflow, "callbacks": callbacks}
    backup = (lambda phase: backup_root / phase) if backup_root else (lambda phase: None)
    if settings.method == "feature_cache":
        if config.augment.transforms:
            print("[train] feature_cache: augmentation is impossible on cached features (each image is one "
                  "fixed vector); augment.transforms ignored. Use transfer.method: frozen to augment.")
            if log_to_mlflow:
                mlflow.set_tag("augmentation", "ignored: impossible with cached features")
        features = cached_features(config, backbone, data, split_digest)
        cache = dataclasses.replace(data, x={name: readers.ArrayReader(array) for name, array in features.items()})
        fitting.compile_model(head, config, data.task, config.train.learning_rate)
        history, scores = fitting.fit_compiled(head, config, cache, config.train.epochs, augment=False,
                                               backup_dir=backup("head"), **options)
        fitting.compile_model(model, config, data.task, config.train.learning_rate)
        return model, history, _validate(model, data, scores, config)
    fitting.compile_model(model, config, data.task, config.train.learning_rate)
    history, scores = fitting.fit_compiled(model, config, data, config.train.epochs, backup_dir=backup("frozen"),
                                           **options)
    if settings.method == "fine_tune":
        tracking_scores = {f"phase1/{key}": value for key, value in scores.items() if key.startswith("val/")}
        trainable = backbones.unfreeze(backbone, settings.fine_tune_layers)
        rate = config.train.learning_rate * settings.fine_tune_lr_factor
        print(f"[train] fine-tuning: {trainable} backbone variables unfrozen (transfer.fine_tune_layers "
              f"{settings.fine_tune_layers or 'all'}, batch norm frozen), learning rate {rate:g}")
        if log_to_mlflow:
            mlflow.log_metric("transfer/unfrozen_variables", trainable)
        fitting.compile_model(model, config, data.task, rate)
        second, scores = fitting.fit_compiled(model, config, data, settings.fine_tune_epochs,
                                              backup_dir=backup("fine_tune"), offset=len(history["loss"]), **options)
        backbones.settle(backbone)  # its variables in the order a saved model loads them back in
        history = {key: history[key] + second.get(key, []) for key in history}
        scores = {**scores, **tracking_scores}
    return model, history, scores


def _validate(model: keras.Model, data: SplitData, scores: dict, config: config_module.Config) -> dict:
    """The assembled image model must score what the head scored on the cached features."""
    val = augment.batches(data.x["val"], fitting.labels(data.y["val"], fitting.loss_for(config, data.task),
                                                        data.num_outputs), 256)
    loss, score = model.evaluate(val, verbose=0)
    key = fitting.objective(data.task).key
    if abs(score - scores[key]) > 1e-3:
        raise StageError(f"the assembled model scores {score:.4f} on val, the head on cached features "
                           f"{scores[key]:.4f}: the cache does not match the backbone")
    return {**scores, key: float(score), "val/loss": float(loss)}
