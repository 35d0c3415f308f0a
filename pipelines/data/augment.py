"""Augmentation with albumentations (images) or the project's 1-D transforms (sensor windows: jitter, scaling,
magnitude and time warping, window slicing), described in the config, applied to the training split inside
tf.data.

`augment.transforms` is a list of {name: <albumentations class>, <its arguments>}; `augment.strength` scales
every transform's probability (a single knob the search can tune); the pipeline is seeded
(`augment.seed`) and applied batch by batch in one `tf.numpy_function`, several batches at once, each with a
seed drawn from one seeded stream, so a given seed gives the same augmented stream.
"""

from __future__ import annotations

import copy
import threading

import albumentations as A
import numpy as np
import tensorflow as tf

from pipelines.core import config as config_module
from pipelines.core.errors import ConfigError
from pipelines.data import readers


def _smooth_curve(rng: np.random.Generator, length: int, channels: int, sigma: float, knots: int) -> np.ndarray:
    """(length, channels) random curves around 1: a cubic spline through `knots` + 2 evenly spaced knots drawn
    from N(1, sigma), one per channel (Um et al. 2017)."""
    from scipy.interpolate import CubicSpline

    knots = int(knots)
    at = np.linspace(0, length - 1, knots + 2)
    heights = rng.normal(1.0, sigma, (knots + 2, channels))
    return CubicSpline(at, heights, axis=0)(np.arange(length))


def _resample(window: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """`window` (T, C) read at fractional `positions` (T,) by linear interpolation, per channel."""
    steps = np.arange(len(window))
    return np.stack([np.interp(positions, steps, window[:, channel]) for channel in range(window.shape[1])], axis=1)


def jitter(window: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return window + rng.normal(0.0, 1.0, window.shape) * sigma * window.std(axis=0, keepdims=True)


def scaling(window: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return window * rng.normal(1.0, sigma, (1, window.shape[1]))


def magnitude_warp(window: np.ndarray, rng: np.random.Generator, sigma: float, knots: int) -> np.ndarray:
    return window * _smooth_curve(rng, len(window), window.shape[1], sigma, knots)


def time_warp(window: np.ndarray, rng: np.random.Generator, sigma: float, knots: int) -> np.ndarray:
    speed = np.clip(_smooth_curve(rng, len(window), 1, sigma, knots)[:, 0], 0.1, None)
    warped = np.cumsum(speed)
    warped = (warped - warped[0]) / max(warped[-1] - warped[0], 1e-12) * (len(window) - 1)
    return _resample(window, warped)


def window_slice(window: np.ndarray, rng: np.random.Generator, ratio: float) -> np.ndarray:
    size = max(2, int(round(ratio * len(window))))
    start = int(rng.integers(0, len(window) - size + 1))
    return _resample(window[start:start + size], np.linspace(0, size - 1, len(window)))


SIGNAL_FUNCTIONS = {"jitter": jitter, "scaling": scaling, "magnitude_warp": magnitude_warp,
                    "time_warp": time_warp, "window_slice": window_slice}


class SignalCompose:
    """Seeded 1-D augmentation of sensor windows (T, C) in raw units, with albumentations' calling convention
    (`compose(image=window)["image"]`, `set_random_seed`), so the training stream treats it as it treats an image
    pipeline: train split only, one seed per batch from one seeded stream. Each transform applies with its
    probability `p` (default 0.5, times `augment.strength`, capped at 1), in the configured order."""

    def __init__(self, steps: list[tuple[str, float, dict]], seed: int):
        self.steps = steps
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, *, image: np.ndarray) -> dict:
        window = np.asarray(image, dtype=np.float64)
        for name, probability, arguments in self.steps:
            if self.rng.random() < probability:
                window = SIGNAL_FUNCTIONS[name](window, self.rng, **arguments)
        return {"image": window.astype(image.dtype)}


def _signal_compose(settings: config_module.AugmentConfig) -> SignalCompose:
    steps = []
    for spec in settings.transforms:
        arguments = {**config_module.SIGNAL_TRANSFORMS[spec["name"]],
                     **{key: value for key, value in spec.items() if key not in ("name", "p")}}
        steps.append((spec["name"], min(1.0, float(spec.get("p", 0.5)) * settings.strength), arguments))
    return SignalCompose(steps, settings.seed)


def build(settings: config_module.AugmentConfig) -> A.Compose | SignalCompose | None:
    """The augmentation pipeline: albumentations for images, `SignalCompose` for sensor windows (the config
    names 1-D transforms), or None when no transform is configured.

    Raises:
        ConfigError: naming the transform that albumentations does not know or that rejects its arguments.
    """
    if not settings.transforms:
        return None
    if all(spec["name"] in config_module.SIGNAL_TRANSFORMS for spec in settings.transforms):
        return _signal_compose(settings)
    transforms = []
    for index, spec in enumerate(settings.transforms):
        arguments = {key: value for key, value in spec.items() if key != "name"}
        arguments["p"] = min(1.0, float(arguments.get("p", 0.5)) * settings.strength)
        transform = getattr(A, spec["name"], None)
        if transform is None:
            raise ConfigError(f"augment.transforms[{index}]: albumentations has no transform '{spec['name']}'")
        try:
            transforms.append(transform(**arguments))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"augment.transforms[{index}] ({spec['name']}): {error}") from None
    return A.Compose(transforms, seed=settings.seed)


def describe(settings: config_module.AugmentConfig) -> str:
    return ", ".join(spec["name"] for spec in settings.transforms) or "none"


def apply_batch(compose: A.Compose | SignalCompose, images: np.ndarray) -> np.ndarray:
    """Augments each item of a batch (uint8 images (H, W, C), float sensor windows (T, C)); the output keeps
    shape and dtype."""
    out = np.empty_like(images)
    for index, image in enumerate(images):
        augmented = compose(image=image)["image"]
        out[index] = augmented.reshape(image.shape)
    return out


def batches(x, y: np.ndarray, batch_size: int, seed: int | None = None, transform=None) -> tf.data.Dataset:
    """Batches of (float32 items, labels) from a split's reader (pipelines/data/readers.py; an array is
    wrapped): images stream from their shards, arrays are gathered by index. `transform(batch, batch_seed) ->
    batch` runs on each uint8 batch (augmentation), in parallel, each batch seeded from one seeded stream."""
    return readers.reader(x).dataset(batch_size, y, seed, transform)


class _Seeded:
    """`compose` applied to a batch with a given seed; each thread has its own copy of the pipeline (one
    albumentations pipeline holds one random state), so batches can be augmented in parallel."""

    def __init__(self, compose: A.Compose | SignalCompose):
        self.compose, self.local = compose, threading.local()

    def __call__(self, images: np.ndarray, batch_seed) -> np.ndarray:
        if not hasattr(self.local, "compose"):
            self.local.compose = copy.deepcopy(self.compose)
        self.local.compose.set_random_seed(int(batch_seed) % (2 ** 32))
        return apply_batch(self.local.compose, images)


def dataset(x, y: np.ndarray, batch_size: int, seed: int, compose: A.Compose | SignalCompose | None
            ) -> tf.data.Dataset:
    """Shuffled training batches, augmented when a pipeline is given, as float32 items."""
    return batches(x, y, batch_size, seed, None if compose is None else _Seeded(compose))
