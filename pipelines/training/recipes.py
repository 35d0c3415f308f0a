"""Which training recipe a config asks for, decided in one place for train, tune and the search trials."""

from __future__ import annotations

from pathlib import Path

from pipelines.core import config as config_module
from pipelines.data.splits import SplitData
from pipelines.training import fitting, transfer

# The config sections a trained model depends on: its stage fingerprint, and the search's.
# (Everything about the data reaches a model through the split's outputs, which are its stage's inputs.)
SECTIONS = ("model", "train", "transfer", "augment", "runtime.strategy")


def fit_model(config: config_module.Config, data: SplitData, split_digest: str, folder: Path | None = None,
              backup: Path | None = None, log_to_mlflow: bool = True, callbacks: list | None = None):
    """Trains the configured architecture, transfer learning included.

    Returns:
        (model, history dict, validation scores: the objective's key, `val/loss`, `epochs`, `fit_seconds`).
    """
    if config.model.architecture == "transfer":
        return transfer.train(config, data, folder, backup, split_digest, log_to_mlflow, callbacks)
    return fitting.fit(config, data, config.train.epochs, folder=folder, backup_dir=backup,
                       log_to_mlflow=log_to_mlflow, callbacks=callbacks)
