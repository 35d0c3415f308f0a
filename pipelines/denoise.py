"""denoise: the denoising autoencoder as a target of its own, and its 2-D latent variant.

The autoencoder is the one whose encoder the pretrain stage saves as the transfer backbone
(`models.autoencoder.build_denoising_autoencoder`): Gaussian noise, active only in training, in front of the
encoder; trained to give back the clean image. On validation images with seeded noise of the same strength
it reports the PSNR of the noisy input and of the reconstruction against the clean image, and a grid of
noisy / denoised / clean examples. The latent variant squeezes the code to `denoise.latent_dim` numbers; with
2 its validation codes are drawn as a scatter plot coloured by class.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import tf_keras as keras

from models import autoencoder
from pipelines import config as config_module
from pipelines import fitting, stage, tracking, workspace
from pipelines.pretrain import psnr


def _fit(model: keras.Model, x_train: np.ndarray, x_val: np.ndarray, epochs: int,
         settings: config_module.DenoiseConfig, prefix: str, verbose: int) -> None:
    model.compile(keras.optimizers.Adam(settings.learning_rate), "mse")
    model.fit(x_train, x_train / 255.0, validation_data=(x_val, x_val / 255.0), epochs=epochs,
              batch_size=settings.batch_size, callbacks=[fitting.MlflowEpochLogger(prefix=prefix)], verbose=verbose)


def noisy_copy(images: np.ndarray, noise_std: float, seed: int) -> np.ndarray:
    """Images (0-255) with seeded Gaussian noise, clipped to the valid range."""
    rng = np.random.default_rng(seed)
    return np.clip(images + rng.normal(0.0, noise_std, images.shape), 0, 255).astype(np.float32)


def example_grid(noisy: np.ndarray, denoised: np.ndarray, clean: np.ndarray, path: Path, count: int = 10) -> None:
    figure, axes = plt.subplots(3, count, figsize=(count, 3.3))
    for column in range(count):
        for row, (title, images, scale) in enumerate((("noisy", noisy, 255.0), ("denoised", denoised, 1.0),
                                                     ("clean", clean, 255.0))):
            axes[row, column].imshow(images[column, ..., 0] / scale, cmap="gray", vmin=0, vmax=1)
            axes[row, column].axis("off")
            if column == 0:
                axes[row, column].set_title(title, fontsize=8, loc="left")
    figure.tight_layout()
    with workspace.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


def latent_scatter(codes: np.ndarray, labels: np.ndarray, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 5))
    points = axis.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=8)
    figure.colorbar(points, ax=axis, label="class")
    axis.set(title="2-D latent codes of the validation images", xlabel="z1", ylabel="z2")
    with workspace.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Trains the denoising autoencoder and the latent variant on the training split's images."""
    split_folder, _ = stage.upstream(config, "split", "denoise")
    settings = config.denoise
    inputs = {"split": stage.manifest_digest(split_folder)}

    def body(folder: Path) -> dict:
        (x_train,), (x_val, y_val) = (workspace.load_arrays(split_folder, "train", "x"),
                                      workspace.load_arrays(split_folder, "val", "x", "y"))
        x_train, x_val = x_train.astype(np.float32), x_val.astype(np.float32)
        keras.utils.set_random_seed(settings.seed)
        model, _ = autoencoder.build_denoising_autoencoder(settings.filters, x_train.shape[1:], settings.noise_std)
        _fit(model, x_train, x_val, settings.epochs, settings, "denoise/", config.runtime.verbose)
        noisy = noisy_copy(x_val, settings.noise_std, settings.seed)
        denoised = model.predict(noisy, verbose=0)
        metrics = {"denoise/val_psnr_noisy_db": psnr(x_val / 255.0, noisy / 255.0),
                   "denoise/val_psnr_denoised_db": psnr(x_val / 255.0, denoised)}
        metrics["denoise/val_psnr_gain_db"] = metrics["denoise/val_psnr_denoised_db"] - metrics[
            "denoise/val_psnr_noisy_db"]
        model.save(folder / "denoising_autoencoder.keras")
        example_grid(noisy, denoised, x_val, folder / "denoising_examples.png")

        keras.utils.set_random_seed(settings.seed)
        latent_model, encoder = autoencoder.build_latent_autoencoder(settings.filters, x_train.shape[1:],
                                                                     settings.latent_dim, settings.noise_std)
        _fit(latent_model, x_train, x_val, settings.latent_epochs, settings, "latent/",
             config.runtime.verbose)
        reconstructed = latent_model.predict(noisy, verbose=0)
        metrics["denoise/latent_val_psnr_denoised_db"] = psnr(x_val / 255.0, reconstructed)
        latent_model.save(folder / "latent_autoencoder.keras")
        artifacts = ["denoising_examples.png"]
        if settings.latent_dim == 2:
            latent_scatter(encoder.predict(x_val, verbose=0), y_val, folder / "latent_scatter.png")
            artifacts.append("latent_scatter.png")
        for name in artifacts:
            mlflow.log_artifact(str(folder / name))
        tracking.log_metrics(metrics)
        print(f"[denoise] validation PSNR: noisy {metrics['denoise/val_psnr_noisy_db']:.2f} dB -> denoised "
              f"{metrics['denoise/val_psnr_denoised_db']:.2f} dB "
              f"({metrics['denoise/val_psnr_gain_db']:+.2f} dB); 2-D latent variant "
              f"{metrics['denoise/latent_val_psnr_denoised_db']:.2f} dB")
        return metrics

    return stage.execute(config, "denoise", ("data", "split", "denoise"), inputs, body, force)
