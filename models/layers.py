"""Small layers shared by the builders."""

from __future__ import annotations

import tf_keras as keras


def normalization(mean: list[float], variance: list[float]) -> keras.layers.Layer:
    """A Keras Normalization layer with statistics fitted on the training split (one value, or one per channel
    or feature), so every exported model carries its own preprocessing."""
    if len(mean) == 1:
        return keras.layers.Normalization(axis=None, mean=mean[0], variance=variance[0], name="normalize")
    return keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="normalize")


def head(x, num_outputs: int, task: str):
    """Softmax over classes, or one linear unit for regression."""
    if task == "regression":
        return keras.layers.Dense(1, name="prediction")(x)
    return keras.layers.Dense(num_outputs, activation="softmax", name="probabilities")(x)
