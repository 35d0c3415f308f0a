"""Augmentation with albumentations, described in the config, applied to the training split inside tf.data.

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


def build(settings: config_module.AugmentConfig) -> A.Compose | None:
    """The albumentations pipeline, or None when no transform is configured.

    Raises:
        ConfigError: naming the transform that albumentations does not know or that rejects its arguments.
    """
    if not settings.transforms:
        return None
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


def apply_batch(compose: A.Compose, images: np.ndarray) -> np.ndarray:
    """Augments each uint8 image of a batch (H, W, C); the output keeps shape and dtype."""
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

    def __init__(self, compose: A.Compose):
        self.compose, self.local = compose, threading.local()

    def __call__(self, images: np.ndarray, batch_seed) -> np.ndarray:
        if not hasattr(self.local, "compose"):
            self.local.compose = copy.deepcopy(self.compose)
        self.local.compose.set_random_seed(int(batch_seed) % (2 ** 32))
        return apply_batch(self.local.compose, images)


def dataset(x, y: np.ndarray, batch_size: int, seed: int, compose: A.Compose | None) -> tf.data.Dataset:
    """Shuffled training batches, augmented when a pipeline is given, as float32 images."""
    return batches(x, y, batch_size, seed, None if compose is None else _Seeded(compose))
