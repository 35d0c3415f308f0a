"""denoise: the denoising autoencoder as a target of its own, and its 2-D latent variant.

The autoencoder is the one whose encoder the pretrain stage saves as the transfer backbone
(`models.autoencoder.build_denoising_autoencoder`): Gaussian noise, active only in training, in front of the
encoder; trained to give back the clean image. On validation images with seeded noise of the same strength
it reports the PSNR of the noisy input and of the reconstruction against the clean image, and a grid of
noisy / denoised / clean examples. The latent variant squeezes the code to `denoise.latent_dim` numbers; with
2 its validation codes are drawn as a scatter plot coloured by class.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import tf_keras as keras

from models import autoencoder
from pipelines.core import config as config_module
from pipelines.core import figures, stage, tracking, workspace
from pipelines.data import splits
from pipelines.training import autoencoders, metrics


def example_grid(noisy: np.ndarray, denoised: np.ndarray, clean: np.ndarray, path: Path, count: int = 10) -> None:
    figure, axes = plt.subplots(3, count, figsize=(count, 3.3))
    for column in range(count):
        for row, (title, images, scale) in enumerate((("noisy", noisy, 255.0), ("denoised", denoised, 1.0),
                                                     ("clean", clean, 255.0))):
            axes[row, column].imshow(images[column, ..., 0] / scale, cmap="gray", vmin=0, vmax=1)
            axes[row, column].axis("off")
            if column == 0:
                axes[row, column].set_title(title, fontsize=8, loc="left")
    figures.save(figure, path)


def latent_scatter(codes: np.ndarray, labels: np.ndarray, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 5))
    points = axis.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=8)
    figure.colorbar(points, ax=axis, label="class")
    axis.set(title="2-D latent codes of the validation images", xlabel="z1", ylabel="z2")
    figures.save(figure, path, tight=False)


SECTIONS = ("data", "split", "denoise")


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Trains the denoising autoencoder and the latent variant on the training split's images."""
    split_folder, _ = stage.upstream(config, "split", "denoise")
    settings = config.denoise
    inputs = {"split": stage.identity(split_folder)}
    backup = stage.backup_dir(config, "denoise", stage.fingerprint(config, "denoise", SECTIONS, inputs))
    if force:  # a forced rerun starts from scratch; an interrupted one resumes
        shutil.rmtree(backup, ignore_errors=True)

    def body(folder: Path) -> dict:
        # The autoencoder trains in memory (digits-sized data): the splits are read whole from the shards.
        x_train, x_val = (splits.split_items(split_folder, name).array().astype(np.float32)
                          for name in ("train", "val"))
        y_val, = workspace.load_arrays(split_folder, "val", "y")
        keras.utils.set_random_seed(settings.seed)
        model, _ = autoencoder.build_denoising_autoencoder(settings.filters, x_train.shape[1:], settings.noise_std)
        fit = {"batch_size": settings.batch_size, "learning_rate": settings.learning_rate,
               "verbose": config.runtime.verbose}
        autoencoders.fit(model, x_train, x_val, settings.epochs, prefix="denoise/", backup_dir=backup / "denoise",
                         **fit)
        scores = autoencoders.denoising_scores(model, x_val, settings.noise_std, settings.seed)
        noisy, denoised = scores["noisy"], scores["denoised"]
        results = {"denoise/val_psnr_noisy_db": scores["psnr_noisy_db"],
                   "denoise/val_psnr_denoised_db": scores["psnr_denoised_db"],
                   "denoise/val_psnr_gain_db": scores["psnr_denoised_db"] - scores["psnr_noisy_db"]}
        model.save(folder / "denoising_autoencoder.keras")
        example_grid(noisy, denoised, x_val, folder / "denoising_examples.png")

        keras.utils.set_random_seed(settings.seed)
        latent_model, encoder = autoencoder.build_latent_autoencoder(settings.filters, x_train.shape[1:],
                                                                     settings.latent_dim, settings.noise_std)
        autoencoders.fit(latent_model, x_train, x_val, settings.latent_epochs, prefix="latent/",
                         backup_dir=backup / "latent", **fit)
        results["denoise/latent_val_psnr_denoised_db"] = metrics.psnr(x_val / 255.0,
                                                                      latent_model.predict(noisy, verbose=0))
        latent_model.save(folder / "latent_autoencoder.keras")
        artifacts = ["denoising_examples.png"]
        if settings.latent_dim == 2:
            latent_scatter(encoder.predict(x_val, verbose=0), y_val, folder / "latent_scatter.png")
            artifacts.append("latent_scatter.png")
        for name in artifacts:
            mlflow.log_artifact(str(folder / name))
        tracking.log_metrics(results)
        print(f"[denoise] validation PSNR: noisy {results['denoise/val_psnr_noisy_db']:.2f} dB -> denoised "
              f"{results['denoise/val_psnr_denoised_db']:.2f} dB "
              f"({results['denoise/val_psnr_gain_db']:+.2f} dB); 2-D latent variant "
              f"{results['denoise/latent_val_psnr_denoised_db']:.2f} dB")
        shutil.rmtree(backup, ignore_errors=True)  # finished: the next run starts afresh
        return results

    return stage.execute(config, "denoise", SECTIONS, inputs, body, force)
