"""A small convolutional classifier with the normalization inside the model."""

from __future__ import annotations

import tf_keras as keras

from models import layers
from pipelines.config import ModelConfig


def build_small_cnn(config: ModelConfig, input_shape: tuple[int, ...], num_outputs: int, normalizer: dict,
                    task: str = "classification") -> keras.Model:
    """Conv-ReLU-MaxPool blocks, dropout, a dense layer and a softmax head.

    Args:
        config: filters per block, dense units, dropout rate and L2 penalty.
        input_shape: (height, width, channels) of the canonical uint8 images, fed as floats in [0, 255].
        num_outputs: classes of the softmax head.
        normalizer: `mean` and `variance` fitted on the training split; the model normalizes its own input so
            the exported TF-Lite model needs no preprocessing beyond resizing.
    """
    regularizer = keras.regularizers.l2(config.l2) if config.l2 else None
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.normalization(normalizer["mean"], normalizer["variance"])(inputs)
    for index, filters in enumerate(config.filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="he_normal",
                                kernel_regularizer=regularizer, name=f"conv{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(config.dropout_rate, name="dropout0")(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", kernel_initializer="he_normal",
                           kernel_regularizer=regularizer, name="dense")(x)
    x = keras.layers.Dropout(config.dropout_rate, name="dropout1")(x)
    return keras.Model(inputs, layers.head(x, num_outputs, task), name="small_cnn")
