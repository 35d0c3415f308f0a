"""A classification or regression head on a pretrained backbone's features."""

from __future__ import annotations

import tf_keras as keras

from models import layers
from models.settings import ModelSettings


def build_head(config: ModelSettings, feature_dim: int, num_outputs: int, task: str) -> keras.Model:
    """Features -> dropout -> dense -> dropout -> head; trained alone on cached features, or on the backbone."""
    features = keras.Input(shape=(feature_dim,), name="features")
    x = keras.layers.Dropout(config.dropout_rate, name="head_dropout0")(features)
    x = keras.layers.Dense(config.dense_units, activation="relu", kernel_initializer=config.initializer,
                           kernel_regularizer=layers.regularizer(config), name="head_dense")(x)
    x = keras.layers.Dropout(config.dropout_rate, name="head_dropout1")(x)
    return keras.Model(features, layers.head(x, num_outputs, task), name="head")


def build_transfer(backbone: keras.layers.Layer, head: keras.Model, input_shape: tuple[int, ...]) -> keras.Model:
    """Images -> backbone called with training=False (batch norm stays in inference mode, also when
    fine-tuning) -> head."""
    inputs = keras.Input(shape=input_shape, name="image")
    return keras.Model(inputs, head(backbone(inputs, training=False)), name="transfer")
