"""The champion: one rule decides which registered model `models:/<experiment>@champion` points at.

Train and tune register every model they finish, tagged with the split manifest it was trained on and its
validation scores. A new model takes the alias when the champion was trained on another split (its scores
are not comparable, and the new split is what every later stage reads) or when its validation objective is
better (ties go to the lower validation loss; an exact tie keeps the champion). So `train --force` with a
worse model leaves a better tuned champion in place, and a model trained on a new split always takes over.
"""

from __future__ import annotations

import mlflow
import numpy as np
import tf_keras as keras
from mlflow.models import infer_signature

from models import backbones
from pipelines.core import config as config_module
from pipelines.core import tracking, workspace
from pipelines.training import fitting

PIP_REQUIREMENTS = ["tensorflow==2.21.0", "tf-keras==2.21.0"]
SPLIT_TAG = "split_manifest"


def log_keras_model(model: keras.Model, config: config_module.Config, example: np.ndarray,
                    tags: dict[str, str] | None = None) -> str:
    """Logs the model to the active run with MLflow's TensorFlow flavor, a signature and an input example;
    returns its URI. A model with a TF-Hub layer gets `hub.KerasLayer` as a custom object, so it loads back
    as a Keras model."""
    example = np.asarray(example, dtype=np.float32)
    signature = infer_signature(example, model.predict(example, verbose=0))
    keras.utils.disable_interactive_logging()  # MLflow predicts on the example with Keras's default progress bar
    try:
        info = mlflow.tensorflow.log_model(model, name=f"{config.experiment}-{config.model.architecture}",
                                           signature=signature, input_example=example,
                                           pip_requirements=PIP_REQUIREMENTS, custom_objects=backbones.CUSTOM_OBJECTS,
                                           tags=tags)
    finally:
        keras.utils.enable_interactive_logging()
    return info.model_uri


def takes_over(scores: dict, split_digest: str, champion_tags: dict | None, objective: fitting.Objective) -> bool:
    """The rule: whether a model with these validation `scores`, trained on `split_digest`, replaces the
    champion whose registry tags are `champion_tags` (None: there is no champion)."""
    if not champion_tags or champion_tags.get(SPLIT_TAG) != split_digest:
        return True
    try:
        incumbent = {name: float(champion_tags[name]) for name in (objective.key, "val/loss")}
    except (KeyError, ValueError):  # a version registered without scores cannot be compared: replace it
        return True
    return objective.better(scores, incumbent)


def register(config: config_module.Config, model: keras.Model, scores: dict, split_digest: str, task: str,
             example: np.ndarray, alias: str = tracking.CHAMPION) -> tuple[str, bool]:
    """Logs and registers `model`, then moves `champion` (or `alias`, a board's `champion-<board>`) to it if the
    rule says so.

    Returns:
        (the new version, whether it is now the champion).
    """
    objective = fitting.objective(task, config.train)
    tags = {SPLIT_TAG: split_digest, objective.key: repr(float(scores[objective.key])),
            "val/loss": repr(float(scores["val/loss"])),
            "config_sha256": workspace.fingerprint(config_module.to_dict(config))}
    if "val/threshold" in scores:  # the binary decision threshold chosen on validation: what export bundles
        tags["val/threshold"] = repr(float(scores["val/threshold"]))
        tags["val/floors_met"] = str(bool(scores["val/floors_met"])).lower()
    version = tracking.register(config, log_keras_model(model, config, example, tags), tags)
    promoted = promote(config, version, scores, split_digest, task, alias)
    return version, promoted


def promote(config: config_module.Config, version: str, scores: dict, split_digest: str, task: str,
            alias: str = tracking.CHAMPION, describe: bool = True) -> bool:
    """Moves `alias` to the registered `version` (whose validation `scores` these are) if the rule says so;
    `describe` writes the outcome into the version's description (when it was just registered)."""
    objective = fitting.objective(task, config.train)
    incumbent = tracking.champion_version(config, alias)
    if incumbent == version:
        return True
    promoted = takes_over(scores, split_digest, tracking.version_tags(config, incumbent) if incumbent else None,
                          objective)
    state = f"the {alias}" if promoted else f"not the {alias} (version {incumbent} stays)"
    if describe:
        tracking.describe_version(config, version, f"{config.model.architecture} on split {split_digest[:12]}: "
                                                   f"{objective.key} {scores[objective.key]:.4f}, val/loss "
                                                   f"{scores['val/loss']:.4f}; {state} when registered")
    if promoted:
        tracking.set_champion(config, version, alias)
        print(f"[champion] version {version} ({objective.key} {scores[objective.key]:.4f}) is the {alias}")
    else:
        print(f"[champion] version {version} ({objective.key} {scores[objective.key]:.4f}) does not beat "
              f"{alias} version {incumbent} on the same split; the {alias} stays")
    return promoted
