"""Fréchet distance between image sets in the feature space of a classifier trained on real data (TF-GAN's
way of scoring MNIST GANs): the distance between two Gaussians fitted to the penultimate-layer features."""

from __future__ import annotations

import numpy as np
import tf_keras as keras
from scipy import linalg

from models import cnn
from pipelines.core import config as config_module
from pipelines.training import fitting


def feature_classifier(x: np.ndarray, y: np.ndarray, classes: int, seed: int, epochs: int = 8) -> keras.Model:
    """A small CNN trained on the real training images; returns the model from images to its dense features."""
    keras.utils.set_random_seed(seed)
    model = cnn.build_small_cnn(config_module.ModelConfig(), x.shape[1:], classes,
                                {"mean": [float(x.mean())], "variance": [float(x.var()) or 1.0]})
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    fitting.guarded_fit(model, x.astype(np.float32), y, epochs=epochs, batch_size=64, log=False)
    return keras.Model(model.input, model.get_layer("dense").output, name="fid_features"), model


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two (N, D) feature sets."""
    mu1, mu2 = first.mean(axis=0), second.mean(axis=0)
    sigma1, sigma2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    root = root.real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2.0 * root))


def fid(features: keras.Model, real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance of two image sets (uint8-range floats) in the classifier's feature space."""
    embed = lambda images: features.predict(images.astype(np.float32), batch_size=256, verbose=0)  # noqa: E731
    return frechet_distance(embed(real), embed(fake))
