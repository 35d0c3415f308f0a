"""Fitting and scoring denoising autoencoders: the pretrain stage's backbone and the denoise stage's target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tf_keras as keras

from pipelines.training import fitting, metrics


def noisy_copy(images: np.ndarray, noise_std: float, seed: int) -> np.ndarray:
    """Images (0-255) with seeded Gaussian noise, clipped to the valid range."""
    rng = np.random.default_rng(seed)
    return np.clip(images + rng.normal(0.0, noise_std, images.shape), 0, 255).astype(np.float32)


def fit(model: keras.Model, x_train: np.ndarray, x_val: np.ndarray, epochs: int, batch_size: int,
        learning_rate: float, verbose: int, prefix: str = "", patience: int | None = None,
        backup_dir: Path | None = None) -> None:
    """Trains a model from images in [0, 255] to the clean images in [0, 1] (its noise layer corrupts the
    input in training only) on the one fit path (fitting.guarded_fit): curves logged to MLflow under `prefix`,
    early stopping unless `patience` is None, a killed fit resumed from `backup_dir`."""
    model.compile(keras.optimizers.Adam(learning_rate), "mse")
    fitting.guarded_fit(model, x_train, x_train / 255.0, validation_data=(x_val, x_val / 255.0), epochs=epochs,
                        batch_size=batch_size, patience=patience, prefix=prefix, verbose=verbose,
                        backup_dir=backup_dir)


def denoising_scores(model: keras.Model, x_val: np.ndarray, noise_std: float, seed: int) -> dict:
    """PSNR (dB) against the clean validation images of the seeded noisy input and of the model's output;
    returns them with the noisy and denoised images (for example grids)."""
    noisy = noisy_copy(x_val, noise_std, seed)
    denoised = model.predict(noisy, verbose=0)
    return {"noisy": noisy, "denoised": denoised, "psnr_noisy_db": metrics.psnr(x_val / 255.0, noisy / 255.0),
            "psnr_denoised_db": metrics.psnr(x_val / 255.0, denoised)}


def learning_verdict(score: float, baseline: float, margin: float, what: str, unit: str) -> dict:
    """Whether a pretraining beat doing nothing (`baseline`: the noisy input's PSNR, the majority class's
    accuracy) on its own validation data by `margin`; the verdict and, when it did not, a warning line."""
    gain = score - baseline
    verdict = {"score": score, "baseline": baseline, "gain": gain, "margin": margin, "learned": gain >= margin}
    if not verdict["learned"]:
        verdict["warning"] = (f"pretraining barely learned: {what} {score:.2f}{unit} against {baseline:.2f}{unit} "
                              f"without it (gain {gain:+.2f}{unit}, model.backbone.pretrain_min_gain "
                              f"{margin:g}{unit}); its backbone may not help. Raise model.backbone.pretrain_epochs "
                              "or pretrain_learning_rate, or pick another backbone")
    return verdict
