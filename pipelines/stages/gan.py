"""gan: a DCGAN on the training split (`models.gan.DCGAN`, trained by `fit()`), scored by FID and exported.

Two networks, two optimizers and an equilibrium instead of a minimum: the model's `train_step` has one tape per
network and each optimizer updates only its own network's weights; `fit()` runs it XLA-compiled under the
configured `tf.distribute` strategy. Callbacks log the losses per epoch, draw sample grids and checkpoint, so a
killed run resumes from its last checkpoint (kept per config under `data/processed/<exp>/.backup/`). The
training and scoring live in `pipelines.training.generative`; this module only orchestrates them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tf_keras as keras

from pipelines.core import config as config_module
from pipelines.core import stage, tracking, workspace
from pipelines.data import splits
from pipelines.training import generative

SECTIONS = ("data", "gan", "runtime.strategy")


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Trains the DCGAN on the training split's images, scores it by FID and exports the generator."""
    split_folder, _ = stage.upstream(config, "split", "gan")
    inputs = {"split": stage.identity(split_folder)}
    checkpoint_dir = stage.backup_dir(config, "gan", stage.fingerprint(config, "gan", SECTIONS, inputs))

    if force:  # a forced rerun starts from scratch; an interrupted one resumes
        shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def body(folder: Path) -> dict:
        # GANs train in memory (digits-sized data): the training split is read whole from the shards.
        images, (labels,) = splits.split_items(split_folder, "train").array(), workspace.load_arrays(
            split_folder, "train", "y")
        losses = generative.train(config, images, labels, folder, checkpoint_dir)
        generator = keras.models.load_model(folder / "generator.keras")
        scores = generative.quality(config, generator, split_folder, folder)
        if config.gan.conditional:
            print("[gan] the conditional generator has two inputs; TF-Lite export covers the unconditional one")
        else:
            scores.update(generative.export_generator(generator, folder, config.gan.latent_dim, config.gan.seed))
        tracking.log_metrics(scores)  # the losses were logged per epoch
        metrics = {**losses, **scores}
        print(f"[gan] FID to real validation images: trained {metrics['gan/fid']:.2f}, untrained generator "
              f"{metrics['gan/fid_untrained_generator']:.2f}, real training images "
              f"{metrics['gan/fid_real_train_vs_val']:.2f}")
        return {**metrics, "gan/epochs": config.gan.epochs_run}

    return stage.execute(config, "gan", SECTIONS, inputs, body, force)
