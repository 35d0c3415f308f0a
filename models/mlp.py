"""A multilayer perceptron for tables, with the normalization inside the model."""

from __future__ import annotations

import tf_keras as keras

from models import layers
from models.settings import ModelSettings


def build_mlp(config: ModelSettings, input_shape: tuple[int, ...], num_outputs: int, normalizer: dict,
              task: str = "classification") -> keras.Model:
    """Normalization, `hidden_layers` dense ReLU layers of `dense_units` (with batch normalization between dense
    and ReLU when `batch_norm`) with dropout, then the head.

    Args:
        input_shape: (features,) after the training-split preprocessing (imputation, one-hot, bins).
        normalizer: `mean` and `variance` fitted on the training split, or scope 'in_preprocessing' when the
            table preprocessing already scaled the features (the int8-friendly default).
        task: 'classification' (softmax over `num_outputs` classes) or 'regression' (one linear output).
    """
    regularizer = layers.regularizer(config)
    inputs = keras.Input(shape=input_shape, name="features")
    x = inputs
    if normalizer.get("scope") != "in_preprocessing":
        x = layers.normalization(normalizer["mean"], normalizer["variance"])(x)
    for index in range(config.hidden_layers):
        if config.batch_norm:  # Dense (its bias is batch norm's beta) -> BatchNormalization -> ReLU
            x = keras.layers.Dense(config.dense_units, use_bias=False, kernel_initializer=config.initializer,
                                   kernel_regularizer=regularizer, name=f"dense{index}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
            x = keras.layers.ReLU(name=f"relu{index}")(x)
        else:
            x = keras.layers.Dense(config.dense_units, activation="relu", kernel_initializer=config.initializer,
                                   kernel_regularizer=regularizer, name=f"dense{index}")(x)
        x = keras.layers.Dropout(config.dropout_rate, name=f"dropout{index}")(x)
    return keras.Model(inputs, layers.head(x, num_outputs, task), name="mlp")
