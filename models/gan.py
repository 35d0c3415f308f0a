"""DCGAN generator and discriminator for small square images in [-1, 1], optionally class-conditional
(the class label is a second input to both networks)."""

from __future__ import annotations

import tf_keras as keras

from models.settings import GanSettings


def build_generator(config: GanSettings, image_shape: tuple[int, int, int], num_classes: int = 0) -> keras.Model:
    """Noise (latent_dim,) [and a class label] -> image of `image_shape` in [-1, 1], upsampled twice by strided
    transposed convolutions. Conditional: a learned embedding of the label is concatenated to the noise."""
    height, width, channels = image_shape
    filters = 2 * config.base_filters
    noise = keras.Input(shape=(config.latent_dim,), name="noise")
    inputs, code = [noise], noise
    if num_classes:
        label = keras.Input(shape=(), dtype="int32", name="label")
        embedded = keras.layers.Embedding(num_classes, config.latent_dim, name="label_embedding")(label)
        code = keras.layers.Concatenate(name="condition")([noise, embedded])
        inputs.append(label)
    x = keras.layers.Dense((height // 4) * (width // 4) * filters, use_bias=False)(code)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Reshape((height // 4, width // 4, filters))(x)
    for block_filters in (filters, filters // 2):
        x = keras.layers.Conv2DTranspose(block_filters, 4, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    image = keras.layers.Conv2D(channels, 3, padding="same", activation="tanh", name="image")(x)
    return keras.Model(inputs if num_classes else noise, image, name="generator")


def build_discriminator(config: GanSettings, image_shape: tuple[int, int, int], num_classes: int = 0) -> keras.Model:
    """Image in [-1, 1] [and a class label] -> one logit (real > 0 > fake); no sigmoid, the loss works on
    logits. Conditional: the label's learned embedding is reshaped to one extra image channel."""
    height, width, _ = image_shape
    image = keras.Input(shape=image_shape, name="image")
    x, inputs = image, [image]
    if num_classes:
        label = keras.Input(shape=(), dtype="int32", name="label")
        plane = keras.layers.Embedding(num_classes, height * width, name="label_embedding")(label)
        plane = keras.layers.Reshape((height, width, 1))(plane)
        x = keras.layers.Concatenate(name="condition")([image, plane])
        inputs.append(label)
    for block_filters in (config.base_filters, 2 * config.base_filters):
        x = keras.layers.Conv2D(block_filters, 4, strides=2, padding="same")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    logit = keras.layers.Dense(1, name="logit")(x)
    return keras.Model(inputs if num_classes else image, logit, name="discriminator")
