"""Augmentation with albumentations, described in the config, applied to the training split inside tf.data.

`augment.transforms` is a list of {name: <albumentations class>, <its arguments>}; `augment.strength` scales
every transform's probability (a single knob the search can tune); the pipeline is seeded
(`augment.seed`) and applied batch by batch in one `tf.numpy_function`, so a given seed gives the same
augmented stream.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import tensorflow as tf

from pipelines.core import config as config_module
from pipelines.core.errors import ConfigError


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


def dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, compose: A.Compose | None) -> tf.data.Dataset:
    """Shuffled training batches, augmented when a pipeline is given, as float32 images."""
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size)
    if compose is not None:
        def augment(images, labels):
            augmented = tf.numpy_function(lambda batch: apply_batch(compose, batch), [images], images.dtype)
            return tf.ensure_shape(augmented, images.shape), labels

        data = data.map(augment, num_parallel_calls=1, deterministic=True)
    return data.map(lambda images, labels: (tf.cast(images, tf.float32), labels)).prefetch(tf.data.AUTOTUNE)
