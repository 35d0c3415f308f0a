"""sr: super-resolution x2 (SRGAN-style) on scikit-image's lossless photographs, with custom GradientTape loops.

Two phases share one generator: first the pixel-loss (MSE) phase, then adversarial fine-tuning with
pixel MSE + a content loss in the feature space of a network trained beforehand (the project's own
autoencoder, or VGG19) + an adversarial term, one tape per network. Training sees random patches of the
training photographs; evaluation upsamples each held-out photograph whole and scores PSNR and SSIM
(scikit-image) against bicubic upsampling of the same low-resolution input, made by anti-aliased bicubic
downscaling. Steps are `tf.function`-compiled under the configured strategy; a killed run resumes from its
last checkpoint (kept per config under `data/processed/<exp>/.backup/`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import skimage
import skimage.data
import tensorflow as tf
import tf_keras as keras
from skimage import metrics as image_metrics
from tqdm import tqdm

import models.sr as sr_models
from pipelines.core import config as config_module
from pipelines.core import figures, stage, tracking, workspace
from pipelines.core.errors import DataError
from pipelines.data import duplicates
from pipelines.training import fitting
from pipelines.training.metrics import psnr

SCALE = 2


def photographs(names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Name -> float32 RGB image in [0, 1] with even sides; grey photographs repeat over three channels and a
    stereo pair gives two entries (`<name>_left`, `<name>_right`)."""
    loaded = {}
    for name in names:
        image = getattr(skimage.data, name)()
        views = {f"{name}_left": image[0], f"{name}_right": image[1]} if isinstance(image, tuple) else {name: image}
        for key, view in views.items():
            view = np.stack([view] * 3, axis=-1) if view.ndim == 2 else view[..., :3]
            loaded[key] = view[: view.shape[0] // SCALE * SCALE, : view.shape[1] // SCALE * SCALE] \
                .astype(np.float32) / 255.0
    return loaded


def check_held_out(training: dict[str, np.ndarray], held_out: dict[str, np.ndarray], tolerance: float) -> None:
    """Refuses a held-out photograph that is a verified near-duplicate of a training one (the config already
    refuses known twins by name; this catches a copy under another name).

    Raises:
        DataError: naming both photographs and their verification residual.
    """
    from PIL import Image

    names = [*training, *held_out]
    images = [Image.fromarray((image * 255).astype(np.uint8)) for image in [*training.values(), *held_out.values()]]
    for first, second, residual in duplicates.near_pairs(images, len(images) - 1, tolerance):
        if (first < len(training)) != (second < len(training)):
            raise DataError(f"sr: held-out photograph '{names[second]}' is a near-duplicate of training "
                            f"photograph '{names[first]}' (verification residual {residual})")


def downscale(image: np.ndarray) -> np.ndarray:
    """Anti-aliased bicubic downscaling by SCALE: how the low-resolution inputs are made."""
    size = (image.shape[0] // SCALE, image.shape[1] // SCALE)
    return tf.image.resize(image[None], size, method="bicubic", antialias=True)[0].numpy()


def bicubic_upscale(low: np.ndarray) -> np.ndarray:
    """The baseline: bicubic upsampling by SCALE, clipped to [0, 1]."""
    size = (low.shape[0] * SCALE, low.shape[1] * SCALE)
    return np.clip(tf.image.resize(low[None], size, method="bicubic")[0].numpy(), 0.0, 1.0)


def patches(images: list[np.ndarray], count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` aligned (low-res, high-res) patch pairs cut at random from the downscaled and original photos,
    each randomly rotated by a multiple of 90 degrees and flipped (the same way on both sides)."""
    rng = np.random.default_rng(seed)
    lows = [downscale(image) for image in images]
    low_size = size // SCALE
    low_patches = np.empty((count, low_size, low_size, 3), np.float32)
    high_patches = np.empty((count, size, size, 3), np.float32)
    for index in range(count):
        which = rng.integers(len(images))
        top = rng.integers(0, lows[which].shape[0] - low_size + 1)
        left = rng.integers(0, lows[which].shape[1] - low_size + 1)
        low = lows[which][top:top + low_size, left:left + low_size]
        high = images[which][SCALE * top:SCALE * top + size, SCALE * left:SCALE * left + size]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        low, high = np.rot90(low, turns), np.rot90(high, turns)
        low_patches[index], high_patches[index] = (low[:, ::-1], high[:, ::-1]) if flip else (low, high)
    return low_patches, high_patches


def content_network(settings: config_module.SrConfig, high: np.ndarray, cache: Path) -> keras.Model:
    """The feature network of the content loss. 'project': an autoencoder trained on the training patches
    (saved in the checkpoint folder, so a resumed run reuses it); 'vgg19': VGG19's block5_conv4."""
    if settings.content_network == "vgg19":
        return sr_models.build_vgg19_features(settings.vgg_weights)
    if cache.is_file():
        return keras.models.load_model(cache)
    keras.utils.set_random_seed(settings.seed)
    autoencoder, features = sr_models.build_feature_autoencoder(settings.feature_filters)
    autoencoder.compile(keras.optimizers.Adam(1e-3), "mse")
    data = tf.data.Dataset.from_tensor_slices((high, high)).shuffle(len(high), seed=settings.seed).repeat() \
        .batch(settings.batch_size)
    history = autoencoder.fit(data, steps_per_epoch=settings.feature_steps, epochs=1, verbose=0)
    mlflow.log_metric("sr/content_network_mse", history.history["loss"][-1])
    features.trainable = False
    save_model(features, cache)
    return features


def save_model(model: keras.Model, path: Path) -> None:
    """`model.save` to a `.keras` file atomically (Keras needs the suffix, so the partial file has it too)."""
    partial = path.parent / f".{path.stem}.partial.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.save(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


class SRTrainer:
    """Generator, discriminator, their optimizers, the step counter and the compiled distributed steps."""

    def __init__(self, settings: config_module.SrConfig, features: keras.Model, strategy: tf.distribute.Strategy,
                 checkpoint_dir: Path):
        self.settings, self.features, self.strategy = settings, features, strategy
        with strategy.scope():
            self.generator = sr_models.build_sr_generator(settings.filters, settings.blocks, 3, SCALE)
            self.discriminator = sr_models.build_sr_discriminator(settings.discriminator_filters)
            schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, settings.pixel_steps)
            self.pixel_optimizer = keras.optimizers.Adam(schedule)
            self.g_optimizer = keras.optimizers.Adam(settings.adversarial_learning_rate, beta_1=0.9)
            self.d_optimizer = keras.optimizers.Adam(settings.adversarial_learning_rate, beta_1=0.9)
            self.steps_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_done")
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True, reduction=keras.losses.Reduction.NONE)
        checkpoint = tf.train.Checkpoint(generator=self.generator, discriminator=self.discriminator,
                                         pixel_optimizer=self.pixel_optimizer, g_optimizer=self.g_optimizer,
                                         d_optimizer=self.d_optimizer, steps_done=self.steps_done)
        self.manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=2)
        if self.manager.latest_checkpoint:
            checkpoint.restore(self.manager.latest_checkpoint).expect_partial()

    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.settings.batch_size)

    @staticmethod
    def _mse(first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.square(first - second), axis=[1, 2, 3])

    def _pixel_replica(self, low: tf.Tensor, high: tf.Tensor) -> dict:
        with tf.GradientTape() as tape:
            loss = self._average(self._mse(self.generator(low, training=True), high))
        gradients = tape.gradient(loss, self.generator.trainable_weights)
        self.pixel_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        return {"pixel_loss": loss}

    def _adversarial_replica(self, low: tf.Tensor, high: tf.Tensor) -> dict:
        fake = self.generator(low, training=True)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(high, training=True)
            fake_logits = self.discriminator(fake, training=True)
            d_loss = self._average(self.bce(tf.ones_like(real_logits), real_logits)
                                   + self.bce(tf.zeros_like(fake_logits), fake_logits))
        gradients = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(gradients, self.discriminator.trainable_weights))
        with tf.GradientTape() as tape:
            fake = self.generator(low, training=True)
            fake_logits = self.discriminator(fake, training=True)
            pixel = self._average(self._mse(fake, high))
            content = self._average(self._mse(self.features(fake, training=False),
                                              self.features(high, training=False)))
            adversarial = self._average(self.bce(tf.ones_like(fake_logits), fake_logits))
            g_loss = pixel + self.settings.content_weight * content + self.settings.adversarial_weight * adversarial
        gradients = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        return {"pixel_loss": pixel, "content_loss": content, "adversarial_loss": adversarial, "g_loss": g_loss,
                "d_loss": d_loss}

    def _reduce(self, per_replica: dict) -> dict:
        return {key: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for key, value in per_replica.items()}

    @tf.function
    def pixel_step(self, low: tf.Tensor, high: tf.Tensor) -> dict:
        return self._reduce(self.strategy.run(self._pixel_replica, args=(low, high)))

    @tf.function
    def adversarial_step(self, low: tf.Tensor, high: tf.Tensor) -> dict:
        return self._reduce(self.strategy.run(self._adversarial_replica, args=(low, high)))


def train(settings: config_module.SrConfig, trainer: SRTrainer, low: np.ndarray, high: np.ndarray,
          checkpoint_dir: Path) -> None:
    """Runs (or resumes) both phases; the pixel-phase generator is kept beside the checkpoints."""
    data = tf.data.Dataset.from_tensor_slices((low, high)).shuffle(len(low), seed=settings.seed).repeat() \
        .batch(settings.batch_size, drop_remainder=True).prefetch(2)
    batches = iter(trainer.strategy.experimental_distribute_dataset(data))
    total = settings.pixel_steps + settings.adversarial_steps
    start = int(trainer.steps_done.numpy())
    if start:
        print(f"[sr] resuming from checkpoint at step {start} ({trainer.manager.latest_checkpoint})")
        mlflow.set_tag("sr.resumed_from_step", str(start))
    sums: dict[str, float] = {}
    count = 0
    for step in tqdm(range(start, total), desc="sr steps", initial=start, total=total):
        phase = trainer.pixel_step if step < settings.pixel_steps else trainer.adversarial_step
        for key, value in phase(*next(batches)).items():
            sums[key] = sums.get(key, 0.0) + float(value)
        count += 1
        trainer.steps_done.assign(step + 1)
        if step + 1 == settings.pixel_steps:
            save_model(trainer.generator, checkpoint_dir / "generator_pixel.keras")
        if (step + 1) % settings.log_every == 0 or step + 1 in (settings.pixel_steps, total):
            tracking.log_metrics({f"sr/{key}": value / count for key, value in sums.items()}, step=step + 1)
            sums, count = {}, 0
            trainer.manager.save(checkpoint_number=step + 1)


def upscale(generator: keras.Model, low: np.ndarray) -> np.ndarray:
    return np.clip(generator.predict(low[None], verbose=0)[0], 0.0, 1.0)


def scores(reference: np.ndarray, candidate: np.ndarray, shave: int) -> tuple[float, float]:
    """PSNR (dB) and SSIM of `candidate` against `reference`, both in [0, 1], without `shave` border pixels."""
    if shave:
        reference, candidate = reference[shave:-shave, shave:-shave], candidate[shave:-shave, shave:-shave]
    ssim = image_metrics.structural_similarity(reference, candidate, data_range=1.0, channel_axis=-1)
    return psnr(reference, candidate), float(ssim)


METHODS = ("bicubic", "pixel", "adversarial")


def evaluate(generators: dict[str, keras.Model], held_out: dict[str, np.ndarray], shave: int) -> dict:
    """Name -> {'low': ..., 'high': ..., method: (upscaled image, psnr, ssim)} for each held-out photograph."""
    results = {}
    for name, high in held_out.items():
        low = downscale(high)
        upscaled = {"bicubic": bicubic_upscale(low)}
        upscaled.update({method: upscale(generator, low) for method, generator in generators.items()})
        results[name] = {"low": low, "high": high,
                         **{method: (image, *scores(high, image, shave)) for method, image in upscaled.items()}}
    return results


def comparison_figure(results: dict, path: Path, crop: int = 128) -> None:
    """Per held-out photograph, the central crop: low-res (nearest), bicubic, both SR phases and the original,
    each titled with its whole-image PSNR / SSIM."""
    methods = [method for method in METHODS if method in next(iter(results.values()))]
    columns = ["low-res"] + methods + ["original"]
    figure, axes = plt.subplots(len(results), len(columns), figsize=(2.4 * len(columns), 2.6 * len(results)),
                                squeeze=False)
    for row, (name, result) in enumerate(results.items()):
        high = result["high"]
        top, left = (high.shape[0] - crop) // 2 // SCALE * SCALE, (high.shape[1] - crop) // 2 // SCALE * SCALE
        window = (slice(top, top + crop), slice(left, left + crop))
        low = np.repeat(np.repeat(result["low"], SCALE, axis=0), SCALE, axis=1)
        panels = [("low-res x2 (nearest)", low)] + [
            (f"{method}\n{result[method][1]:.2f} dB / {result[method][2]:.3f}", result[method][0])
            for method in methods] + [(f"original ({name})", high)]
        for axis, (title, image) in zip(axes[row], panels):
            axis.imshow(np.clip(image[window], 0, 1))
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    figures.save(figure, path, dpi=100)


def summarize(results: dict) -> tuple[dict, str]:
    """Mean PSNR/SSIM per method (metrics) and the per-image table (CSV text)."""
    methods = [method for method in METHODS if method in next(iter(results.values()))]
    metrics = {}
    for method in methods:
        metrics[f"sr/psnr_{method}"] = float(np.mean([result[method][1] for result in results.values()]))
        metrics[f"sr/ssim_{method}"] = float(np.mean([result[method][2] for result in results.values()]))
    header = ("image", *[f"{method}_{score}" for method in methods for score in ("psnr", "ssim")])
    rows = [(name, *[f"{result[method][index]:.4f}" for method in methods for index in (1, 2)])
            for name, result in results.items()]
    return metrics, workspace.csv_text(header, rows)


SECTIONS = ("sr", "runtime.strategy")


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Trains the SR generator (pixel phase, then adversarial fine-tuning) and scores both on held-out photos."""
    settings = config.sr
    held_out = photographs(settings.eval_images)
    inputs = {"skimage": skimage.__version__,
              **{name: workspace.sha256_bytes(image.tobytes()) for name, image in held_out.items()}}
    checkpoint_dir = stage.backup_dir(config, "sr", stage.fingerprint(config, "sr", SECTIONS, inputs))
    if force:  # a forced rerun starts from scratch; an interrupted one resumes
        shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def body(folder: Path) -> dict:
        training = photographs(settings.train_images)
        check_held_out(training, held_out, config.data.near_duplicate_tolerance)
        mlflow.log_params({"sr.train_photos": ",".join(training), "sr.eval_photos": ",".join(held_out)})
        low, high = patches(list(training.values()), settings.patches, settings.patch_size, settings.seed)
        strategy = fitting.strategy(config.runtime)
        with strategy.scope():
            features = content_network(settings, high, checkpoint_dir / "content_features.keras")
        keras.utils.set_random_seed(settings.seed)
        trainer = SRTrainer(settings, features, strategy, checkpoint_dir)
        train(settings, trainer, low, high, checkpoint_dir)
        generators = {"pixel": keras.models.load_model(checkpoint_dir / "generator_pixel.keras")}
        shutil.copy2(checkpoint_dir / "generator_pixel.keras", folder / "generator_pixel.keras")
        if settings.adversarial_steps:
            generators["adversarial"] = trainer.generator
            save_model(trainer.generator, folder / "generator_adversarial.keras")
        results = evaluate(generators, held_out, settings.shave)
        metrics, table = summarize(results)
        workspace.write_text(folder / "sr_scores.csv", table)
        comparison_figure(results, folder / "sr_comparison.png")
        for name in ("sr_scores.csv", "sr_comparison.png"):
            mlflow.log_artifact(str(folder / name))
        tracking.log_metrics(metrics)
        gains = ", ".join(f"{method} {metrics[f'sr/psnr_{method}'] - metrics['sr/psnr_bicubic']:+.2f} dB"
                          for method in generators)
        print(f"[sr] held-out mean PSNR: bicubic {metrics['sr/psnr_bicubic']:.2f} dB; {gains}")
        return {**metrics, "sr/steps": settings.pixel_steps + settings.adversarial_steps}

    return stage.execute(config, "sr", SECTIONS, inputs, body, force)
