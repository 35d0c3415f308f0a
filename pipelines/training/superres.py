"""Super-resolution x2 on scikit-image's lossless photographs: the data (photographs, aligned patch pairs, the
held-out check), the content network, `models.sr.SRGAN` trained by `fit()` in its two phases, and the scores
(PSNR and SSIM against bicubic upsampling of the same low-resolution input, a comparison figure, a table).

Training runs in windows of `log_every` steps (a window also ends where the pixel phase ends): each window is
one `fit()` epoch, after which callbacks log its mean losses at the step it reached and save the checkpoint
(networks, optimizers and the step counter), so a killed run resumes at the last window it finished.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import skimage.data
import tensorflow as tf
import tf_keras as keras
from skimage import metrics as image_metrics

import models.sr as sr_models
from pipelines.core import config as config_module
from pipelines.core import figures, workspace
from pipelines.core.errors import DataError
from pipelines.data import duplicates
from pipelines.training import fitting
from pipelines.training.generative import LossLogger, resume
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
    each randomly rotated by a multiple of 90 degrees and flipped (the same way on both sides). The low-res
    patches are float32 in [0, 1]; the high-res ones are the photographs' own 8-bit values (uint8, a quarter of
    the memory; `as_float` maps them back exactly)."""
    rng = np.random.default_rng(seed)
    lows = [downscale(image) for image in images]
    low_size = size // SCALE
    low_patches = np.empty((count, low_size, low_size, 3), np.float32)
    high_patches = np.empty((count, size, size, 3), np.uint8)
    for index in range(count):
        which = rng.integers(len(images))
        top = rng.integers(0, lows[which].shape[0] - low_size + 1)
        left = rng.integers(0, lows[which].shape[1] - low_size + 1)
        low = lows[which][top:top + low_size, left:left + low_size]
        high = np.rint(images[which][SCALE * top:SCALE * top + size, SCALE * left:SCALE * left + size] * 255.0)
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        low, high = np.rot90(low, turns), np.rot90(high, turns)
        low_patches[index], high_patches[index] = (low[:, ::-1], high[:, ::-1]) if flip else (low, high)
    return low_patches, high_patches


def as_float(high: tf.Tensor) -> tf.Tensor:
    """8-bit high-res patches -> float32 in [0, 1], the values `photographs` gives."""
    return tf.cast(high, tf.float32) / 255.0


def content_network(settings: config_module.SrConfig, high: np.ndarray, cache: Path) -> keras.Model:
    """The feature network of the content loss. 'project': an autoencoder trained on the training patches
    (saved in the checkpoint folder, so a resumed run reuses it); 'vgg19': VGG19's block5_conv4."""
    if settings.content_network == "vgg19":
        return sr_models.build_vgg19_features(settings.vgg_weights)
    if cache.is_file():
        return keras.models.load_model(cache)
    keras.utils.set_random_seed(settings.seed)
    autoencoder, features = sr_models.build_feature_autoencoder(settings.feature_filters)
    autoencoder.compile(keras.optimizers.Adam(settings.feature_learning_rate), "mse")
    data = tf.data.Dataset.from_tensor_slices(high).shuffle(len(high), seed=settings.seed).repeat() \
        .batch(settings.batch_size).map(lambda batch: (as_float(batch), as_float(batch)))
    history = fitting.guarded_fit(autoencoder, data, steps_per_epoch=settings.feature_steps, epochs=1, log=False)
    mlflow.log_metric("sr/content_network_mse", history["loss"][-1])
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


def build_model(settings: config_module.SrConfig, features: keras.Model,
                strategy: tf.distribute.Strategy) -> sr_models.SRGAN:
    """The SR generator and discriminator with their optimizers, made under `strategy`, compiled for the pixel
    phase (the pixel optimizer's learning rate rises linearly from 0 over the first `warmup_fraction` of
    `pixel_steps`, then decays to 0 by a cosine over the rest)."""
    with strategy.scope():
        model = sr_models.SRGAN(sr_models.build_sr_generator(settings.filters, settings.blocks, 3, SCALE),
                                sr_models.build_sr_discriminator(settings.discriminator_filters), features,
                                settings.batch_size, settings.content_weight, settings.adversarial_weight,
                                settings.pixel_loss)
        schedule = pixel_schedule(settings.learning_rate, settings.pixel_steps, settings.warmup_fraction)
        model.compile(keras.optimizers.Adam(schedule),
                      keras.optimizers.Adam(settings.adversarial_learning_rate, beta_1=settings.adversarial_beta_1),
                      keras.optimizers.Adam(settings.adversarial_learning_rate, beta_1=settings.adversarial_beta_1))
    return model


def pixel_schedule(peak: float, steps: int, warmup_fraction: float) -> keras.optimizers.schedules.CosineDecay:
    """Linear warm-up from 0 to `peak` over `warmup_fraction` of `steps`, then cosine decay to 0 at `steps`."""
    warmup = min(round(warmup_fraction * steps), steps - 1)
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(peak, steps)
    return keras.optimizers.schedules.CosineDecay(0.0, steps - warmup, warmup_target=peak, warmup_steps=warmup)


def use_phase(model: sr_models.SRGAN, adversarial: bool) -> None:
    """Recompiles `model` for the pixel or the adversarial phase, keeping its optimizers."""
    with model.distribute_strategy.scope():
        model.compile(model.pixel_optimizer, model.g_optimizer, model.d_optimizer, adversarial=adversarial)


def windows(start: int, pixel_steps: int, total: int, every: int) -> list[tuple[int, int, int, bool]]:
    """The training left after step `start`, as runs of equal windows: (first step, steps per window, windows,
    adversarial). A window ends at every multiple of `every`, at the end of the pixel phase and at `total`."""
    runs: list[list] = []
    previous = 0
    for end in sorted({*range(every, total, every), pixel_steps, total}):
        if end > start:
            length, adversarial = end - previous, previous >= pixel_steps
            if runs and runs[-1][1] == length and runs[-1][3] == adversarial:
                runs[-1][2] += 1
            else:
                runs.append([previous, length, 1, adversarial])
        previous = end
    return [tuple(run) for run in runs]


class WindowCheckpoint(keras.callbacks.Callback):
    """After each window: the step counter, the pixel-phase generator when that phase ends (kept beside the
    checkpoints), then the checkpoint."""

    def __init__(self, manager: tf.train.CheckpointManager, counter: tf.Variable, step, pixel_steps: int,
                 pixel_generator: Path):
        super().__init__()
        self.manager, self.counter, self.step = manager, counter, step
        self.pixel_steps, self.pixel_generator = pixel_steps, pixel_generator

    def on_epoch_end(self, epoch, logs=None):
        done = self.step(epoch)
        self.counter.assign(done)
        if done == self.pixel_steps:
            save_model(self.model.generator, self.pixel_generator)
        self.manager.save(checkpoint_number=done)


def train(config: config_module.Config, features: keras.Model, low: np.ndarray, high: np.ndarray,
          checkpoint_dir: Path) -> keras.Model:
    """Runs (or resumes) both phases; the pixel-phase generator is kept beside the checkpoints as
    `generator_pixel.keras`. Returns the generator as the last phase left it."""
    settings = config.sr
    strategy = fitting.strategy(config.runtime)
    keras.utils.set_random_seed(settings.seed)
    model = build_model(settings, features, strategy)
    manager, counter, start = resume(checkpoint_dir, settings.checkpoints_kept, strategy, "sr", "step",
                                     generator=model.generator, discriminator=model.discriminator,
                                     pixel_optimizer=model.pixel_optimizer, g_optimizer=model.g_optimizer,
                                     d_optimizer=model.d_optimizer)
    data = tf.data.Dataset.from_tensor_slices((low, high)).shuffle(len(low), seed=settings.seed).repeat() \
        .batch(settings.batch_size, drop_remainder=True).map(lambda low, high: (low, as_float(high))).prefetch(2)
    total = settings.pixel_steps + settings.adversarial_steps
    for first, length, count, adversarial in windows(start, settings.pixel_steps, total, settings.log_every):
        if adversarial != model.adversarial:
            use_phase(model, adversarial)
        step = lambda epoch, first=first, length=length: first + (epoch + 1) * length  # noqa: E731
        callbacks = [LossLogger("sr/", step),
                     WindowCheckpoint(manager, counter, step, settings.pixel_steps,
                                      checkpoint_dir / "generator_pixel.keras")]
        fitting.guarded_fit(model, data, steps_per_epoch=length, epochs=count, callbacks=callbacks, log=False,
                            verbose=config.runtime.verbose)
    return model.generator


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
