"""pretrain: the project's own pretrained backbones, because nothing can be downloaded here.

- `project_autoencoder`: the encoder of a denoising autoencoder trained on the unlabeled training split;
- `project_source_task`: the encoder of a classifier trained on a source task (other classes of the same
  source, `model.backbone.source_classes`, disjoint from the target's `data.classes`).
Each is saved in TF-Hub's SavedModel format under `data/processed/<exp>/backbones/<kind>-<fingerprint>/`
(kept across reruns, since registered models refer to it) and loaded back through `hub.KerasLayer` like any
hub model. For other configs the stage has nothing to do and says so.
A pretraining that does not beat doing nothing on its own validation data (the noisy input's PSNR, the majority
class's accuracy) by `model.backbone.pretrain_min_gain` warns, and `pretrain_report.json` says so.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import mlflow
import numpy as np
import tf_keras as keras
from sklearn.model_selection import train_test_split

from models import autoencoder, backbones
from pipelines.core import config as config_module
from pipelines.core import stage, tracking, workspace
from pipelines.data import sources, splits
from pipelines.training import autoencoders, fitting, transfer

REPORT = "pretrain_report.json"  # the score, what doing nothing scores, the gain, the margin, whether it learned


def pretrain_autoencoder(config: config_module.Config, split_folder: Path,
                         backup: Path) -> tuple[keras.Model, dict, dict]:
    """Denoising autoencoder on the training split's images (their labels are not used); returns the encoder,
    its metrics and whether it beat the noisy input by model.backbone.pretrain_min_gain dB."""
    settings = config.model.backbone
    x_train, x_val = (splits.split_items(split_folder, name).array() for name in ("train", "val"))
    keras.utils.set_random_seed(config.train.seed)
    model, encoder = autoencoder.build_denoising_autoencoder(settings.filters, x_train.shape[1:], settings.noise_std)
    x_train, x_val = x_train.astype(np.float32), x_val.astype(np.float32)
    autoencoders.fit(model, x_train, x_val, settings.pretrain_epochs, settings.pretrain_batch_size,
                     settings.pretrain_learning_rate, config.runtime.verbose, patience=settings.pretrain_patience,
                     backup_dir=backup)
    scores = autoencoders.denoising_scores(model, x_val, settings.noise_std, config.train.seed)
    verdict = autoencoders.learning_verdict(scores["psnr_denoised_db"], scores["psnr_noisy_db"],
                                            settings.pretrain_min_gain, "denoised validation PSNR", " dB")
    return encoder, {"pretrain/val_psnr_noisy_db": scores["psnr_noisy_db"],
                     "pretrain/val_psnr_denoised_db": scores["psnr_denoised_db"]}, verdict


def pretrain_source_task(config: config_module.Config, backup: Path) -> tuple[keras.Model, dict, dict]:
    """A classifier on the source classes; its encoder is the backbone. Target classes are never read. Returns
    the encoder, its metrics and whether it beat the majority class by model.backbone.pretrain_min_gain points."""
    settings = config.model.backbone
    names = tuple(str(item) for item in settings.source_classes)
    raw = sources.load(dataclasses.replace(config.data, classes=names), config.root)
    keep, images = [], []
    for index, image in sources.scan(raw, "source task"):
        keep.append(index)
        images.append(sources.to_canonical(image, config.data.image_size, config.data.channels))
    x, y = np.stack(images).astype(np.float32), raw.labels[keep]
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=settings.source_val_fraction, stratify=y,
                                                      random_state=config.split.seed)
    keras.utils.set_random_seed(config.train.seed)
    encoder = autoencoder.build_encoder(settings.filters, x.shape[1:])
    inputs = keras.Input(shape=x.shape[1:])
    features = keras.layers.Dropout(0.3)(encoder(inputs))
    model = keras.Model(inputs, keras.layers.Dense(len(names), activation="softmax")(features))
    model.compile(optimizer=keras.optimizers.Adam(settings.pretrain_learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fitting.guarded_fit(model, x_train, y_train, validation_data=(x_val, y_val), epochs=settings.pretrain_epochs,
                        batch_size=settings.pretrain_batch_size, patience=settings.pretrain_patience,
                        verbose=config.runtime.verbose, backup_dir=backup)
    accuracy = float(model.evaluate(x_val, y_val, verbose=0)[1])
    majority = float(np.bincount(y_val).max() / len(y_val))  # what predicting the commonest class scores
    verdict = autoencoders.learning_verdict(100 * accuracy, 100 * majority, settings.pretrain_min_gain,
                                            "source-task validation accuracy", "%")
    return encoder, {"pretrain/source_val_accuracy": accuracy}, verdict


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Pretrains the configured project backbone, or does nothing when the config needs none."""
    split_folder, _ = stage.upstream(config, "split", "pretrain")
    inputs = {"split": stage.identity(split_folder)}
    sections = ("data", "split", "model.backbone", "model.architecture", "train.seed")
    backup = stage.backup_dir(config, "pretrain", stage.fingerprint(config, "pretrain", sections, inputs))
    if force:  # a forced rerun starts from scratch; an interrupted one resumes
        shutil.rmtree(backup, ignore_errors=True)

    def body(folder: Path) -> dict:
        if not config.model.uses_project_backbone:
            print("[pretrain] nothing to pretrain: the model uses no project backbone")
            workspace.write_json(folder / transfer.BACKBONE_RECORD, {"needed": False})
            mlflow.set_tag("pretrain", "not needed: the model uses no project backbone")
            return {}
        backbone = config.model.backbone.kind
        if backbone == "project_autoencoder":
            encoder, metrics, verdict = pretrain_autoencoder(config, split_folder, backup)
        else:
            encoder, metrics, verdict = pretrain_source_task(config, backup)
        metrics["pretrain/learned"] = float(verdict["learned"])
        metrics["pretrain/val_gain"] = verdict["gain"]
        if not verdict["learned"]:
            print(f"[pretrain] warning: {verdict['warning']}")
            mlflow.set_tag("pretrain.warning", verdict["warning"])
        workspace.write_json(folder / REPORT, {"kind": backbone, **verdict})
        mlflow.log_artifact(str(folder / REPORT))
        key = workspace.fingerprint({"inputs": inputs, "config": config_module.to_dict(config.model.backbone),
                                     "data": config_module.to_dict(config.data)})[:16]
        path = workspace.stage_dir(config.root, config.experiment, "backbones") / f"{backbone}-{key}"
        with workspace.staging(path) as staged:
            backbones.save_for_hub(encoder, staged)
        workspace.write_json(folder / transfer.BACKBONE_RECORD, {"needed": True, "kind": backbone, "path": str(path),
                                                        "feature_dim": int(encoder.output_shape[-1])})
        mlflow.log_artifact(str(folder / transfer.BACKBONE_RECORD))
        tracking.log_metrics(metrics)
        shutil.rmtree(backup, ignore_errors=True)  # finished: the next run starts afresh
        return metrics

    def backbone_still_there(manifest: dict) -> bool:
        record = workspace.stage_dir(config.root, config.experiment, "pretrain") / transfer.BACKBONE_RECORD
        return not config.model.uses_project_backbone or Path(workspace.read_json(record).get("path", "")).is_dir()

    return stage.execute(config, "pretrain", sections, inputs, body, force, still_valid=backbone_still_there)
