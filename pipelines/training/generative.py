"""The DCGAN: `models.gan.DCGAN` trained by `fit()` under the configured `tf.distribute` strategy, with callbacks
that log the epoch's losses to MLflow, checkpoint and draw sample grids; then scored (FID, the classes of its
samples) and exported to TF-Lite.

A killed run resumes: a `tf.train.CheckpointManager` in the stage's backup folder holds the networks, the
optimizers and the epoch counter, and `fit(initial_epoch=...)` trains only the epochs that are left.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import tensorflow as tf
import tf_keras as keras

import models.gan as gan_models
from pipelines.core import config as config_module
from pipelines.core import figures, tracking, workspace
from pipelines.data import splits
from pipelines.training import fid, fitting

SAMPLES = 32  # images in a sample grid, eight to a row


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1], the generator's tanh range."""
    return images.astype(np.float32) / 127.5 - 1.0


def num_classes(config: config_module.Config, labels: np.ndarray) -> int:
    """The classes a conditional generator takes (0: unconditional)."""
    return int(labels.max()) + 1 if config.gan.conditional else 0


def generator_inputs(generator: keras.Model, noise: np.ndarray, labels: np.ndarray | None):
    """What the generator takes: the noise, plus the labels for a conditional one."""
    return [noise, labels.astype(np.int32)] if len(generator.inputs) > 1 else noise


def sample_grid(generator: keras.Model, noise: np.ndarray, labels: np.ndarray | None, path: Path,
                title: str) -> None:
    """Samples from fixed noise (conditional: the labels cycle through the classes along each row)."""
    images = (generator(generator_inputs(generator, noise, labels), training=False).numpy() + 1.0) * 127.5
    columns = 8
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns, rows))
    for axis, image in zip(axes.ravel(), images):
        axis.imshow(np.clip(image[..., 0], 0, 255), cmap="gray", vmin=0, vmax=255)
    for axis in axes.ravel():
        axis.axis("off")
    figure.suptitle(title)
    figures.save(figure, path, dpi=80, tight=False)


def resume(directory: Path, kept: int, strategy: tf.distribute.Strategy, stage_name: str, unit: str,
           **objects) -> tuple[tf.train.CheckpointManager, tf.Variable, int]:
    """A checkpoint manager over `objects` and a counter of the `unit`s done, in `directory`, restored from its
    latest checkpoint (optimizer slots are restored when the first step creates them). A resumed run says so,
    on the console and as the run's tag `<stage_name>.resumed_from_<unit>`.

    Returns:
        (manager, counter, the count restored: 0 for a fresh start).
    """
    with strategy.scope():
        counter = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{unit}s_done")
    checkpoint = tf.train.Checkpoint(done=counter, **objects)
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=kept)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
    start = int(counter.numpy())
    if start:
        print(f"[{stage_name}] resuming from checkpoint at {unit} {start} ({manager.latest_checkpoint})")
        mlflow.set_tag(f"{stage_name}.resumed_from_{unit}", str(start))
    return manager, counter, start


class LossLogger(keras.callbacks.Callback):
    """Logs the epoch's mean losses (the model's trackers) to MLflow as `<prefix><name>` at `step(epoch)`."""

    def __init__(self, prefix: str, step: Callable[[int], int]):
        super().__init__()
        self.prefix, self.step = prefix, step

    def on_epoch_end(self, epoch, logs=None):
        tracking.log_metrics({f"{self.prefix}{name}": value for name, value in (logs or {}).items()},
                             step=self.step(epoch))


class SampleAndCheckpoint(keras.callbacks.Callback):
    """Every `every` epochs and at the last: the checkpoint (with the epoch counter), then a grid of the averaged
    generator's samples from fixed noise, written into `folder` and logged under the run's `samples/`."""

    def __init__(self, manager: tf.train.CheckpointManager, counter: tf.Variable, every: int, epochs: int,
                 noise: np.ndarray, labels: np.ndarray | None, folder: Path):
        super().__init__()
        self.manager, self.counter, self.every, self.epochs = manager, counter, every, epochs
        self.noise, self.labels, self.folder = noise, labels, folder

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        self.counter.assign(done)
        if done % self.every and done != self.epochs:
            return
        self.manager.save(checkpoint_number=done)
        grid = self.folder / f"samples_epoch_{done:03d}.png"
        sample_grid(self.model.average_generator, self.noise, self.labels, grid, f"DCGAN samples, epoch {done}")
        mlflow.log_artifact(str(grid), "samples")


def build_model(settings: config_module.GanConfig, image_shape: tuple, strategy: tf.distribute.Strategy,
                classes: int = 0) -> gan_models.DCGAN:
    """The compiled DCGAN, made under `strategy`. Its step is XLA-compiled when `settings.jit_compile` is true
    and there is one replica; otherwise (false, or `auto` not yet resolved by `compiled_with_xla`) it is a
    tf.function alone."""
    with strategy.scope():
        model = gan_models.DCGAN(gan_models.build_generator(settings, image_shape, classes),
                                 gan_models.build_discriminator(settings, image_shape, classes),
                                 settings.latent_dim, settings.batch_size, settings.label_smoothing,
                                 settings.instance_noise, settings.ema_decay)
        model.compile(d_optimizer=keras.optimizers.Adam(settings.learning_rate, beta_1=settings.beta_1),
                      g_optimizer=keras.optimizers.Adam(settings.learning_rate, beta_1=settings.beta_1),
                      jit_compile=settings.jit_compile is True and strategy.num_replicas_in_sync == 1)
    return model


def first_batch(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The first `size` training images (in [-1, 1]) and labels, as the step takes them: what a step is timed on."""
    return tf.constant(to_unit_range(images[:size])), tf.constant(labels[:size].astype(np.int32))


def step_milliseconds(settings: config_module.GanConfig, image_shape: tuple, strategy: tf.distribute.Strategy,
                      classes: int, batch: tuple, steps: int = 10,
                      modes: tuple[str, ...] = ("xla", "graph")) -> dict[str, float]:
    """Milliseconds per training step of a throwaway DCGAN of these settings on `batch` (images in [-1, 1],
    labels), per mode: `xla` (XLA-compiled), `graph` (a tf.function alone), `eager` (`train_step` called
    directly, as `compile(run_eagerly=True)` runs it); after two warm-up steps each (the first traces and
    compiles), with the losses read back after every step as `fit()` does. The throwaway model's updates touch
    nothing the real one trains."""
    timings = {}
    for name in modes:
        model = build_model(settings, image_shape, strategy, classes)
        step = model.train_step if name == "eager" else tf.function(model.train_step, jit_compile=name == "xla")
        for _ in range(2):
            step(batch)
        started = time.perf_counter()
        for _ in range(steps):
            [value.numpy() for value in step(batch).values()]
        timings[name] = (time.perf_counter() - started) / steps * 1000
    return timings


def compiled_with_xla(settings: config_module.GanConfig, image_shape: tuple, strategy: tf.distribute.Strategy,
                      classes: int, batch: tuple) -> tuple[bool, dict[str, float]]:
    """Whether the step is XLA-compiled, and the timings that decided it (none unless `jit_compile` is `auto`).

    `auto` times both (`step_milliseconds`) and keeps the faster: which one wins depends on the machine. On a
    2-core AMD EPYC (AVX-512), 16x16 digits at batch 64 and 64 filters, XLA's step took 80-103 ms against 57-77
    ms for tf.function alone, whose convolutions run on oneDNN (`make bench ARGS=gan`); on an Intel Xeon with
    AMX XLA had been the faster one. Several replicas always get tf.function alone."""
    if strategy.num_replicas_in_sync != 1:
        return False, {}
    if settings.jit_compile != "auto":
        return bool(settings.jit_compile), {}
    timings = step_milliseconds(settings, image_shape, strategy, classes, batch)
    return timings["xla"] < timings["graph"], timings


def train(config: config_module.Config, images: np.ndarray, labels: np.ndarray, folder: Path,
          checkpoint_dir: Path) -> dict:
    """Trains (or resumes) the DCGAN; writes sample grids and `generator.keras` (the averaged generator) into
    `folder`; returns the last epoch's losses (none when the checkpoint had every epoch)."""
    settings = config.gan
    strategy = fitting.strategy(config.runtime)
    classes = num_classes(config, labels)
    batch = first_batch(images, labels, settings.batch_size)
    xla, timings = compiled_with_xla(settings, images.shape[1:], strategy, classes, batch)
    if timings:
        print(f"[gan] training step: XLA {timings['xla']:.1f} ms, tf.function alone {timings['graph']:.1f} ms; "
              f"using {'XLA' if xla else 'tf.function alone'} (gan.jit_compile=auto)")
        tracking.log_metrics({f"gan/step_ms_{name}": value for name, value in timings.items()})
    mlflow.set_tag("gan.step_compiled_with", "xla" if xla else "tf.function")
    settings = dataclasses.replace(settings, jit_compile=xla)
    keras.utils.set_random_seed(settings.seed)  # after the timing, so the weights do not depend on it
    model = build_model(settings, images.shape[1:], strategy, classes)
    manager, epoch, start = resume(checkpoint_dir, settings.checkpoints_kept, strategy, "gan", "epoch",
                                   generator=model.generator, average_generator=model.average_generator,
                                   discriminator=model.discriminator, g_optimizer=model.g_optimizer,
                                   d_optimizer=model.d_optimizer)
    noise = np.random.default_rng(settings.seed).normal(size=(SAMPLES, settings.latent_dim)).astype(np.float32)
    fixed_labels = np.arange(SAMPLES) % classes if classes else None
    data = (tf.data.Dataset.from_tensor_slices((to_unit_range(images), labels.astype(np.int32)))
            .shuffle(len(images), seed=settings.seed).batch(settings.batch_size, drop_remainder=True))
    callbacks = [LossLogger("gan/", lambda epoch: epoch),
                 SampleAndCheckpoint(manager, epoch, settings.sample_every, settings.epochs_run, noise, fixed_labels,
                                     folder)]
    # the one fit path: its NaN guard stops a diverged GAN naming the loss; resume and logging are the callbacks'
    history = fitting.guarded_fit(model, data, epochs=settings.epochs_run, initial_epoch=start, callbacks=callbacks,
                                  log=False, verbose=config.runtime.verbose)
    model.average_generator.save(folder / "generator.keras")
    return {f"gan/{name}": values[-1] for name, values in history.items()}


def generate(generator: keras.Model, count: int, latent_dim: int, seed: int,
             labels: np.ndarray | None = None) -> np.ndarray:
    """`count` generated images in the uint8 range [0, 255], as floats."""
    noise = np.random.default_rng(seed).normal(size=(count, latent_dim)).astype(np.float32)
    outputs = generator.predict(generator_inputs(generator, noise, labels), batch_size=256, verbose=0)
    return np.clip((outputs + 1.0) * 127.5, 0.0, 255.0)


def _histogram(counts: np.ndarray, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.bar([str(index) for index in range(len(counts))], counts, color="tab:blue")
    axis.set(title="Classes of generated samples (by the real-data classifier)", xlabel="class", ylabel="count")
    figures.save(figure, path)


def quality(config: config_module.Config, generator: keras.Model, split_folder: Path, folder: Path) -> dict:
    """FID against real validation images for the trained and an untrained generator, and real training
    images against real validation images, so the number has a scale. The real-data classifier also labels
    the generated samples: a per-class histogram shows mode collapse, and for a conditional GAN its accuracy
    against the conditioning labels is logged."""
    x_train, x_val = (splits.split_items(split_folder, name).array() for name in ("train", "val"))
    y_train, = workspace.load_arrays(split_folder, "train", "y")
    classes = int(y_train.max()) + 1
    features, classifier = fid.feature_classifier(x_train, y_train, classes, config.gan.seed)
    count = len(x_val)
    labels = np.arange(count) % classes if config.gan.conditional else None
    keras.utils.set_random_seed(config.gan.seed + 1)
    untrained = gan_models.build_generator(config.gan, x_train.shape[1:], num_classes(config, y_train))
    fake = generate(generator, count, config.gan.latent_dim, config.gan.seed, labels)
    untrained_fake = generate(untrained, count, config.gan.latent_dim, config.gan.seed, labels)
    metrics = {"gan/fid": fid.fid(features, x_val, fake),
               "gan/fid_untrained_generator": fid.fid(features, x_val, untrained_fake),
               "gan/fid_real_train_vs_val": fid.fid(features, x_val, x_train[:count].astype(np.float32))}
    predicted = classifier.predict(fake.astype(np.float32), verbose=0).argmax(axis=1)
    _histogram(np.bincount(predicted, minlength=classes), folder / "generated_class_histogram.png")
    mlflow.log_artifact(str(folder / "generated_class_histogram.png"))
    if labels is not None:
        metrics["gan/conditional_label_accuracy"] = float((predicted == labels).mean())
    return metrics


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
