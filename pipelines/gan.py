"""gan: a DCGAN on the training split, trained with a custom `tf.GradientTape` loop.

Two networks, two optimizers and an equilibrium instead of a minimum, so `fit()` alone cannot express it:
each step has one tape per network and each optimizer updates only its own network's weights. Steps are
`tf.function`-compiled and run under the configured `tf.distribute` strategy. MLflow autolog does not see a
custom loop, so losses, sample grids and the generator are logged by hand. A killed run resumes from its
last checkpoint (`tf.train.CheckpointManager`, kept per config under `data/processed/<exp>/gan_checkpoints/`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import tensorflow as tf
import tf_keras as keras
from tqdm import tqdm

import models.gan as gan_models
from pipelines import config as config_module
from pipelines import fitting, stage, tracking, workspace


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1], the generator's tanh range."""
    return images.astype(np.float32) / 127.5 - 1.0


class DCGANTrainer:
    """Networks, optimizers, checkpoint and the compiled distributed step."""

    def __init__(self, config: config_module.GanConfig, image_shape: tuple, strategy: tf.distribute.Strategy,
                 checkpoint_dir: Path):
        self.config, self.strategy = config, strategy
        with strategy.scope():
            self.generator = gan_models.build_generator(config, image_shape)
            self.discriminator = gan_models.build_discriminator(config, image_shape)
            self.g_optimizer = keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1)
            self.d_optimizer = keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.loss = keras.losses.BinaryCrossentropy(from_logits=True, reduction=keras.losses.Reduction.NONE)
        checkpoint = tf.train.Checkpoint(generator=self.generator, discriminator=self.discriminator,
                                         g_optimizer=self.g_optimizer, d_optimizer=self.d_optimizer,
                                         epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=2)
        if self.manager.latest_checkpoint:
            checkpoint.restore(self.manager.latest_checkpoint).expect_partial()

    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.config.batch_size)

    def _with_noise(self, images: tf.Tensor) -> tf.Tensor:
        if not self.config.instance_noise:
            return images
        return images + tf.random.normal(tf.shape(images), stddev=self.config.instance_noise)

    def _replica_step(self, real: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.shape(real)[0]
        noise = tf.random.normal((batch, self.config.latent_dim))
        with tf.GradientTape() as tape:
            fake = self.generator(noise, training=True)
            real_logits = self.discriminator(self._with_noise(real), training=True)
            fake_logits = self.discriminator(self._with_noise(fake), training=True)
            real_targets = tf.fill(tf.shape(real_logits), 1.0 - self.config.label_smoothing)
            d_loss = self._average(self.loss(real_targets, real_logits)
                                   + self.loss(tf.zeros_like(fake_logits), fake_logits))
        gradients = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(gradients, self.discriminator.trainable_weights))
        noise = tf.random.normal((batch, self.config.latent_dim))
        with tf.GradientTape() as tape:
            fake_logits = self.discriminator(self._with_noise(self.generator(noise, training=True)), training=True)
            g_loss = self._average(self.loss(tf.ones_like(fake_logits), fake_logits))
        gradients = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        return d_loss, g_loss

    @tf.function
    def step(self, real: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        d_loss, g_loss = self.strategy.run(self._replica_step, args=(real,))
        reduce = tf.distribute.ReduceOp.SUM
        return self.strategy.reduce(reduce, d_loss, axis=None), self.strategy.reduce(reduce, g_loss, axis=None)


def sample_grid(generator: keras.Model, noise: np.ndarray, path: Path, title: str) -> None:
    images = (generator(noise, training=False).numpy() + 1.0) * 127.5
    columns = 8
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns, rows))
    for axis, image in zip(axes.ravel(), images):
        axis.imshow(np.clip(image[..., 0], 0, 255), cmap="gray", vmin=0, vmax=255)
    for axis in axes.ravel():
        axis.axis("off")
    figure.suptitle(title)
    with workspace.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=80)
    plt.close(figure)


def train(config: config_module.Config, images: np.ndarray, folder: Path, checkpoint_dir: Path) -> dict:
    """Trains (or resumes) the DCGAN; writes sample grids into `folder`; returns the last epoch's losses."""
    settings = config.gan
    keras.utils.set_random_seed(settings.seed)
    strategy = fitting.strategy(config.runtime)
    trainer = DCGANTrainer(settings, images.shape[1:], strategy, checkpoint_dir)
    fixed_noise = np.random.default_rng(settings.seed).normal(size=(32, settings.latent_dim)).astype(np.float32)
    data = (tf.data.Dataset.from_tensor_slices(to_unit_range(images))
            .shuffle(len(images), seed=settings.seed).batch(settings.batch_size, drop_remainder=True))
    data = strategy.experimental_distribute_dataset(data)
    start = int(trainer.epoch.numpy())
    if start:
        print(f"[gan] resuming from checkpoint at epoch {start} ({trainer.manager.latest_checkpoint})")
        mlflow.set_tag("gan.resumed_from_epoch", str(start))
    losses = {}
    for epoch in tqdm(range(start, settings.epochs), desc="gan epochs", initial=start, total=settings.epochs):
        totals = np.zeros(2)
        steps = 0
        for batch in data:
            totals += [float(value) for value in trainer.step(batch)]
            steps += 1
        losses = {"gan/d_loss": totals[0] / steps, "gan/g_loss": totals[1] / steps}
        tracking.log_metrics(losses, step=epoch)
        trainer.epoch.assign(epoch + 1)
        if (epoch + 1) % settings.sample_every == 0 or epoch + 1 == settings.epochs:
            trainer.manager.save(checkpoint_number=epoch + 1)
            grid = folder / f"samples_epoch_{epoch + 1:03d}.png"
            sample_grid(trainer.generator, fixed_noise, grid, f"DCGAN samples, epoch {epoch + 1}")
            mlflow.log_artifact(str(grid), "samples")
    trainer.generator.save(folder / "generator.keras")
    return losses


def generate(generator: keras.Model, count: int, latent_dim: int, seed: int) -> np.ndarray:
    """`count` generated images in the uint8 range [0, 255], as floats."""
    noise = np.random.default_rng(seed).normal(size=(count, latent_dim)).astype(np.float32)
    return np.clip((generator.predict(noise, batch_size=256, verbose=0) + 1.0) * 127.5, 0.0, 255.0)


def quality(config: config_module.Config, generator: keras.Model, split_folder: Path) -> dict:
    """FID against real validation images for the trained and an untrained generator, and real training
    images against real validation images, so the number has a scale."""
    from pipelines import fid

    (x_train, y_train), (x_val, _) = (workspace.load_arrays(split_folder, name, "x", "y") for name in ("train",
                                                                                                      "val"))
    features, classifier = fid.feature_classifier(x_train, y_train, int(y_train.max()) + 1, config.gan.seed)
    count = len(x_val)
    keras.utils.set_random_seed(config.gan.seed + 1)
    untrained = gan_models.build_generator(config.gan, x_train.shape[1:])
    fake = generate(generator, count, config.gan.latent_dim, config.gan.seed)
    return {"gan/fid": fid.fid(features, x_val, fake),
            "gan/fid_untrained_generator": fid.fid(features, x_val, generate(untrained, count,
                                                                             config.gan.latent_dim, config.gan.seed)),
            "gan/fid_real_train_vs_val": fid.fid(features, x_val, x_train[:count].astype(np.float32))}


def export_generator(generator: keras.Model, folder: Path, latent_dim: int, seed: int) -> dict:
    """The generator as float32 and int8 TF-Lite, each run on the LiteRT interpreter against Keras."""
    import deploy.edge.predict as edge
    from deploy import tflite

    noise = np.random.default_rng(seed).normal(size=(64, latent_dim)).astype(np.float32)
    expected = generator.predict(noise, verbose=0)
    metrics = {}
    for variant in ("float32", "int8"):
        flatbuffer = tflite.convert(generator, variant, noise)
        workspace.write_bytes(folder / f"generator_{variant}.tflite", flatbuffer)
        outputs = edge.LiteRTModel(flatbuffer).predict(noise[:16])
        metrics[f"gan/export/{variant}/size_bytes"] = len(flatbuffer)
        metrics[f"gan/export/{variant}/max_abs_diff"] = float(np.abs(outputs - expected[:16]).max())
    return metrics


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Trains the DCGAN on the training split's images, scores it by FID and exports the generator."""
    split_folder, _ = stage.upstream(config, "split", "gan")
    inputs = {"split": stage.manifest_digest(split_folder)}
    key = workspace.fingerprint({"gan": config_module.to_dict(config.gan), **inputs})[:16]
    checkpoint_dir = workspace.stage_dir(config.root, config.experiment, "gan").parent / "gan_checkpoints" / key

    if force:  # a forced rerun starts from scratch; an interrupted one resumes
        shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def body(folder: Path) -> dict:
        images, = workspace.load_arrays(split_folder, "train", "x")
        losses = train(config, images, folder, checkpoint_dir)
        generator = keras.models.load_model(folder / "generator.keras")
        scores = {**quality(config, generator, split_folder),
                  **export_generator(generator, folder, config.gan.latent_dim, config.gan.seed)}
        tracking.log_metrics(scores)  # the losses were logged per epoch
        metrics = {**losses, **scores}
        print(f"[gan] FID to real validation images: trained {metrics['gan/fid']:.2f}, untrained generator "
              f"{metrics['gan/fid_untrained_generator']:.2f}, real training images "
              f"{metrics['gan/fid_real_train_vs_val']:.2f}")
        return {**metrics, "gan/epochs": config.gan.epochs}

    return stage.execute(config, "gan", ("data", "gan", "runtime.strategy"), inputs, body, force)
