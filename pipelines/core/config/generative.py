"""Config sections of the generative and dense-prediction stages: gan, denoise, segment, sr."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines.core.config.schema import at_least, below, greater_than, non_empty, one_of, option
from pipelines.core.errors import ConfigError

if TYPE_CHECKING:
    from pipelines.core.config import Config


def auto_or_bool(value: object) -> str | None:
    """true, false or `auto`."""
    return None if isinstance(value, bool) or value == "auto" else f"must be true, false or auto, got {value!r}"

@dataclass(frozen=True)
class GanConfig:
    epochs: int | None = option(None, "training epochs; unset: 150 for the DCGAN (2,850 steps on digits at batch "
                                "64), 50 for the conditional GAN (each the better measured: docs/stages/gan.md)",
                                at_least(1))
    batch_size: int = option(64, "real images per step (global batch)", at_least(2))
    latent_dim: int = option(32, "size of the generator's noise input", at_least(1))
    base_filters: int = option(32, "filters of the first discriminator block (doubled in the second)", at_least(1))
    learning_rate: float = option(2e-4, "Adam learning rate of both networks", greater_than(0))
    beta_1: float = option(0.5, "Adam beta_1 of both networks (0.5 as in DCGAN)", at_least(0), below(1))
    label_smoothing: float = option(0.0, "real labels become 1 - label_smoothing for the discriminator",
                                    at_least(0), below(0.5))
    instance_noise: float = option(0.0, "std of Gaussian noise added to both inputs of the discriminator",
                                   at_least(0))
    minibatch_std: bool = option(True, "the discriminator's second block also sees the batch's standard "
                                 "deviation (ProGAN's minibatch-stddev feature map), against mode collapse")
    ema_decay: float = option(0.999, "decay of the moving average of the generator's weights that is sampled, "
                              "scored and exported (0: the raw generator)", at_least(0), below(1))
    jit_compile: bool | str = option("auto", "how the training step is compiled: true (XLA), false (tf.function "
                                     "alone) or auto (both timed on a throwaway model at the start, the faster "
                                     "kept); a multi-replica strategy gets tf.function alone", auto_or_bool)
    sample_every: int = option(5, "epochs between sample grids and checkpoints", at_least(1))
    checkpoints_kept: int = option(2, "checkpoints kept in the stage's backup folder (the newest resumes a killed "
                                   "run)", at_least(1))
    conditional: bool = option(False, "class-conditional GAN: the label is a second input to both networks")
    seed: int = option(0, "seed of weights, noise and shuffling")

    @property
    def epochs_run(self) -> int:
        """`epochs`, or where unset the default of the kind of GAN: 150 unconditional, 50 conditional. On digits
        over seeds 0-2, the conditional GAN's Fréchet distance over the real-vs-real one was 1.26, 1.28 and 0.98
        at 50 epochs against 2.05, 1.27 and 1.39 at 150; the DCGAN's mean went from 1.59 at 50 to 1.36 at 150."""
        if self.epochs is not None:
            return self.epochs
        return 50 if self.conditional else 150


@dataclass(frozen=True)
class DenoiseConfig:
    filters: tuple[int, ...] = option((32, 64), "encoder convolution filters per block (decoder mirrors them)",
                                      non_empty)
    noise_std: float = option(40.0, "std of the Gaussian noise on 0-255 inputs (training and validation)",
                              greater_than(0))
    epochs: int = option(30, "training epochs of the denoising autoencoder", at_least(1))
    latent_dim: int = option(2, "width of the bottleneck of the latent variant (2 gives the scatter plot)",
                             at_least(1))
    latent_epochs: int = option(30, "training epochs of the latent variant", at_least(1))
    batch_size: int = option(64, "images per step", at_least(1))
    learning_rate: float = option(1e-3, "Adam learning rate", greater_than(0))
    seed: int = option(0, "seed of weights, shuffling and the validation noise")


@dataclass(frozen=True)
class SegmentConfig:
    source: str = option("generated", "generated: digits placed on cluttered canvases; folders: a user's images "
                         "and masks", one_of("generated", "folders"))
    images_dir: str = option("", "folders: images (PNG/JPEG/BMP); relative paths are under the project root")
    masks_dir: str = option("", "folders: one mask per image, same file stem, PNG of class indices")
    num_classes: int = option(11, "classes including background (generated: background + digits 0-9)",
                              at_least(2))
    canvas_size: int = option(48, "side of the canvases (folders: images and masks are resized to it)",
                              at_least(8))
    train_canvases: int = option(1500, "generated: training canvases", at_least(1))
    val_canvases: int = option(300, "generated: validation canvases (from digits no training canvas uses)",
                               at_least(1))
    val_fraction: float = option(0.2, "folders: share of the image/mask pairs held out for validation",
                                 greater_than(0), below(1))
    digits_per_canvas: tuple[int, ...] = option((1, 3), "generated: [min, max] digits on a canvas")
    digit_size: tuple[int, ...] = option((14, 26), "generated: [min, max] side of a placed digit in pixels")
    clutter: int = option(3, "generated: random lines and blobs drawn on each canvas", at_least(0))
    noise_std: float = option(12.0, "generated: std of the Gaussian pixel noise (0-255)", at_least(0))
    filters: tuple[int, ...] = option((8, 16, 32, 64), "filters per level; the last is the bottleneck (at 1/8 size)",
                                      non_empty)
    loss: str = option("cross_entropy", "per-pixel loss", one_of("cross_entropy", "dice"))
    epochs: int = option(25, "training epochs of each model (same budget for U-Net and the plain one)",
                         at_least(1))
    batch_size: int = option(32, "canvases per step", at_least(1))
    learning_rate: float = option(3e-3, "Adam learning rate", greater_than(0))
    representative_samples: int = option(100, "training canvases that calibrate int8", at_least(1))
    seed: int = option(0, "seed of the generator, the folder split, weights and shuffling")

    def check(self, config: Config) -> None:
        for name in ("digits_per_canvas", "digit_size"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
                raise ConfigError(f"segment.{name}: must be [min, max] with 0 < min <= max, got {list(low_high)}")
        if self.source == "generated" and self.digit_size[1] > self.canvas_size:
            raise ConfigError(f"segment.digit_size: max {self.digit_size[1]} exceeds canvas_size {self.canvas_size}")
        if self.source == "folders" and not (self.images_dir and self.masks_dir):
            raise ConfigError("segment.images_dir and segment.masks_dir: both are required when source is 'folders'")
        levels = 2 ** (len(self.filters) - 1)
        if self.canvas_size % levels:
            raise ConfigError(f"segment.canvas_size: must be divisible by {levels} for {len(self.filters)} "
                              f"levels of segment.filters, got {self.canvas_size}")


# skimage.data's lossless photographs (PNG; its JPEGs, rocket, retina and hubble_deep_field, are left out:
# a network learns their block artifacts). `cat` is the same photograph as `chelsea`, and stereo_motorcycle is
# both views of one scene, so each twin set is one source that may sit on one side of the split only.
SR_PHOTOS = ("astronaut", "brick", "camera", "cat", "cell", "chelsea", "coffee", "coins", "colorwheel", "grass",
             "gravel", "immunohistochemistry", "moon", "page", "stereo_motorcycle", "text")
SR_TWINS = {"cat": "chelsea"}


@dataclass(frozen=True)
class SrConfig:
    train_images: tuple[str, ...] = option(
        ("astronaut", "brick", "coins", "grass", "gravel", "stereo_motorcycle"),
        "skimage.data photographs cut into training patches (the natural photographs and textures: the documents, "
        "the moon and the micrographs measured worse on held-out photographs)", non_empty, one_of(*SR_PHOTOS))
    eval_images: tuple[str, ...] = option(("chelsea", "camera", "coffee"),
                                          "held-out skimage.data photographs, evaluated whole", non_empty,
                                          one_of(*SR_PHOTOS))
    patch_size: int = option(48, "high-resolution training patch side (the low-res patch is half)", at_least(8))
    patches: int = option(8000, "training patches sampled (seeded) from the training photographs", at_least(1))
    batch_size: int = option(16, "patches per step (global batch)", at_least(1))
    filters: int = option(32, "generator feature maps", at_least(1))
    blocks: int = option(4, "generator residual blocks", at_least(1))
    pixel_steps: int = option(3000, "steps of the pixel-loss phase", at_least(1))
    pixel_loss: str = option("l1", "pixel loss of both phases: l1 (mean absolute error, as EDSR trains) or mse",
                             one_of("l1", "mse"))
    learning_rate: float = option(2e-3, "peak Adam learning rate of the pixel phase (reached after the warm-up, "
                                  "then cosine decay to 0)", greater_than(0))
    warmup_fraction: float = option(0.1, "share of the pixel phase over which the learning rate rises linearly "
                                    "from 0 before its cosine decay (without it, a seed could diverge at 2e-3)",
                                    at_least(0), below(1))
    adversarial_steps: int = option(300, "steps of adversarial fine-tuning after the pixel phase", at_least(0))
    adversarial_learning_rate: float = option(1e-4, "Adam learning rate of both networks in fine-tuning",
                                              greater_than(0))
    adversarial_beta_1: float = option(0.9, "Adam beta_1 of both networks in fine-tuning", at_least(0), below(1))
    discriminator_filters: int = option(16, "filters of the first discriminator block", at_least(1))
    adversarial_weight: float = option(1e-3, "weight of the adversarial loss in fine-tuning (SRGAN: 1e-3)",
                                       at_least(0))
    content_network: str = option("project", "perceptual-loss features: the project's own autoencoder trained "
                                  "on the training patches, or VGG19", one_of("project", "vgg19"))
    vgg_weights: str = option("imagenet", "VGG19 weights: 'imagenet' (downloads once) or a weights file")
    feature_filters: int = option(32, "filters of the project's content network", at_least(1))
    feature_steps: int = option(300, "training steps of the project's content network", at_least(1))
    feature_learning_rate: float = option(1e-3, "Adam learning rate of the project's content network",
                                          greater_than(0))
    content_weight: float = option(1.0, "weight of the content (feature MSE) loss in fine-tuning", at_least(0))
    log_every: int = option(100, "steps between logged losses and checkpoints", at_least(1))
    checkpoints_kept: int = option(2, "checkpoints kept in the stage's backup folder (the newest resumes a killed "
                                   "run)", at_least(1))
    shave: int = option(2, "border pixels left out of PSNR and SSIM", at_least(0))
    seed: int = option(0, "seed of patches, weights and shuffling")

    def check(self, config: Config) -> None:
        """No photograph, nor its twin, on both sides of the super-resolution split."""
        source = lambda name: SR_TWINS.get(name, name)  # noqa: E731
        shared = sorted({source(name) for name in self.train_images} & {source(name) for name in self.eval_images})
        if shared:
            raise ConfigError(f"sr.eval_images: {shared} also in sr.train_images (a photograph and its twin, "
                              f"{SR_TWINS}, count as one); held-out photographs must not be trained on")
        if self.patch_size % 2:
            raise ConfigError(f"sr.patch_size: must be even (x2 super-resolution), got {self.patch_size}")


