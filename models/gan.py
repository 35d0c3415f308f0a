"""DCGAN generator and discriminator for small square images in [-1, 1]."""

from __future__ import annotations

import tf_keras as keras

from pipelines.config import GanConfig


def build_generator(config: GanConfig, image_shape: tuple[int, int, int]) -> keras.Model:
    """Noise (latent_dim,) -> image of `image_shape` in [-1, 1], upsampled twice by strided transposed convs."""
    height, width, channels = image_shape
    filters = 2 * config.base_filters
    noise = keras.Input(shape=(config.latent_dim,), name="noise")
    x = keras.layers.Dense((height // 4) * (width // 4) * filters, use_bias=False)(noise)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Reshape((height // 4, width // 4, filters))(x)
    for block_filters in (filters, filters // 2):
        x = keras.layers.Conv2DTranspose(block_filters, 4, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    image = keras.layers.Conv2D(channels, 3, padding="same", activation="tanh", name="image")(x)
    return keras.Model(noise, image, name="generator")


def build_discriminator(config: GanConfig, image_shape: tuple[int, int, int]) -> keras.Model:
    """Image in [-1, 1] -> one logit (real > 0 > fake); no sigmoid, the loss works on logits."""
    image = keras.Input(shape=image_shape, name="image")
    x = image
    for block_filters in (config.base_filters, 2 * config.base_filters):
        x = keras.layers.Conv2D(block_filters, 4, strides=2, padding="same")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    logit = keras.layers.Dense(1, name="logit")(x)
    return keras.Model(image, logit, name="discriminator")
